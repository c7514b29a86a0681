"""The notifier: alerts from the ``alerts`` stream to people's phones and other systems
(Telegram, Discord, Slack, ntfy, e-mail, signed webhooks, Apprise), at least once, never
twice, within each API's rate limits. docs/architecture.md#the-notifier."""
