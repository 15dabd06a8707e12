"""Errors the engine raises to its callers, each with text meant for the operator."""

from __future__ import annotations


class MailconsoleError(Exception):
    """Base of every error shown to a user; ``str()`` is one clear line."""


class NotFound(MailconsoleError):
    """No message (or group) with that id."""


class WrongState(MailconsoleError):
    """The message is not in a state that allows the operation."""


class BrokerUnavailable(MailconsoleError):
    """RabbitMQ did not answer."""


class PublishFailed(MailconsoleError):
    """A publish was not confirmed by the broker in time."""
