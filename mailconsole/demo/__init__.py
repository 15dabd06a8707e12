"""``mailconsole demo``: a capture SMTP relay, sample traffic and the runner that
opens the console over them. Demo only: nothing here is used by a real worker."""
