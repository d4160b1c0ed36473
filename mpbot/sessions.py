"""Chat sessions and the commands that manage them: start, stop, clear, history, help.

A session is an id under the subscriber's openid (``keys.session``) that expires after
``MPBOT_SESSION_TTL`` idle seconds; every message renews it, and its history (``keys.history``,
under the id) with it. ``/clear`` gives the session a new id and ``/stop`` removes it, so a job
still writing to the old history has nothing to bring back; both forget the subscriber's latest
picture (``keys.picture``), which questions would otherwise go with.
"""

import json
import secrets


def _new_sid() -> str:
    return secrets.token_urlsafe(12)


class Sessions:
    def __init__(self, config, store, keys) -> None:
        self.store = store
        self.keys = keys
        self.ttl = config.MPBOT_SESSION_TTL
        self.max_turns = config.MPBOT_HISTORY_TURNS

    def touch(self, openid: str) -> str | None:
        """The subscriber's session id, renewed with its history; None outside a session."""
        sid = self.store.get(self.keys.session(openid), renew=self.ttl)
        if sid is not None:
            self.store.expire(self.keys.history(sid), self.ttl)
        return sid

    def open(self, openid: str) -> str:
        """The subscriber's session id, a new session if none is going (MPBOT_ALWAYS_ON)."""
        sid = self.touch(openid)
        if sid is not None:
            return sid
        new = _new_sid()
        if self.store.set(self.keys.session(openid), new, self.ttl, only_new=True):
            return new
        # Another process started one a moment ago: that one.
        sid = self.touch(openid)
        if sid is None:
            self.store.set(self.keys.session(openid), new, self.ttl)
        return sid or new

    def start(self, openid: str) -> bool:
        """Start a session; False when one is already going (it is renewed)."""
        if self.store.set(self.keys.session(openid), _new_sid(), self.ttl, only_new=True):
            return True
        self.touch(openid)
        return False

    def clear(self, openid: str) -> bool:
        """A new id for the session, its history dropped; False outside a session."""
        old = self.store.swap(self.keys.session(openid), _new_sid(), self.ttl)
        if old is None:
            return False
        self.store.delete(self.keys.history(old), self.keys.picture(openid))
        return True

    def end(self, openid: str) -> bool:
        """End the session and drop its history; False outside a session."""
        sid = self.store.pop(self.keys.session(openid))
        if sid is None:
            return False
        self.store.delete(self.keys.history(sid), self.keys.picture(openid))
        return True

    def history(self, sid: str) -> list[dict[str, str]]:
        return [json.loads(turn) for turn in self.store.items(self.keys.history(sid))]

    def append(self, sid: str, question: str, answer: str) -> None:
        turn = json.dumps({"q": question, "a": answer}, ensure_ascii=False)
        self.store.push(self.keys.history(sid), turn, self.ttl, keep=self.max_turns)


class Commands:
    def __init__(self, config) -> None:
        self.config = config
        self.names = {alias.strip().lower(): name for name, aliases in config.COMMANDS.items() for alias in aliases}

    def match(self, text: str) -> str | None:
        return self.names.get(text.strip().lower())

    def run(self, name: str, sessions: Sessions, reader, links, metrics, openid: str) -> str:
        """Run a command (all but ``next``, which reads answers: see ``Reader``); its reply."""
        text = self.config.text
        if name == "start":
            if not sessions.start(openid):
                return text("already_started")
            metrics.count("sessions_started")
            return text("started")
        if name == "stop":
            # Questions still waiting their turn are cancelled with the session.
            reader.drop(openid)
            return text("stopped") if sessions.end(openid) else text("not_started")
        if name == "clear":
            return text("cleared") if sessions.clear(openid) else text("not_started")
        if name == "history":
            sid = sessions.touch(openid)
            return text("not_started") if sid is None else text("history", url=links.history_url(sid))
        return text("help")
