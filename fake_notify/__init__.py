"""Fake notification APIs over real HTTP: the Telegram Bot API, Discord and Slack webhooks,
ntfy and a webhook receiver, each answering in its API's own format (429 bodies and
headers included) and enforcing the limits the real API documents, so that a test can
count what arrived and see any limit the notifier broke."""
