"""Chat sessions and the commands that manage them: start, stop, clear, help.

A session is an id under the subscriber's openid that expires after ``MPBOT_SESSION_TTL`` idle
seconds; every message renews it. Its history lives under the id, so ``/clear`` (a new id) and
``/stop`` (no id) leave a job that is still writing to the old history nothing to bring back.
"""

from . import metrics


class Commands:
    def __init__(self, config) -> None:
        self.config = config
        self.names = {alias.strip().lower(): name for name, aliases in config.COMMANDS.items() for alias in aliases}

    def match(self, text: str) -> str | None:
        return self.names.get(text.strip().lower())

    def run(self, name: str, store, reader, links, openid: str) -> str:
        """Run a command (all but ``next``, which reads answers: see ``Reader``); its reply."""
        text = self.config.text
        if name == "start":
            if not store.start_session(openid):
                return text("already_started")
            metrics.count(store, "sessions_started")
            return text("started")
        if name == "stop":
            # Questions still waiting their turn are cancelled with the session.
            reader.drop(openid)
            return text("stopped") if store.end_session(openid) else text("not_started")
        if name == "clear":
            return text("cleared") if store.clear_history(openid) else text("not_started")
        if name == "history":
            sid = store.touch_session(openid)
            return text("not_started") if sid is None else text("history", url=links.history_url(sid))
        return text("help")
