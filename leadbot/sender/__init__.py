"""The outbound sender worker: the only code that talks to Twilio (or the sandbox outbox).

Run it with `python -m leadbot.sender`; `leadbot.sender.worker.Sender` is the engine, `server` the health and
metrics endpoint.
"""
