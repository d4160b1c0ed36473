"""The composition root: settings -> store -> answers, sessions, metrics, links, pusher -> runner
-> reader. A web process (``web.create_app``) and an RQ worker process (``jobs.answer``) build the
same ``Services`` from the same settings; nothing else builds these objects.

In embedded mode the runner is a thread pool that runs ``jobs.run_answer`` with these services;
with Redis it enqueues RQ jobs, which a worker process runs with its own ``Services``. Either way
the runner only starts jobs: it is the job that tells the reader it has finished.
"""

from .answers import Answers
from .jobs import PoolRunner, RQRunner, run_answer
from .keys import Keys
from .links import Links
from .llm import LLM
from .media import Media
from .metrics import Metrics
from .push import WeChatAPI, make_pusher
from .reader import Reader
from .sessions import Sessions
from .store import make_store


class Services:
    """Everything one process holds; ``close()`` releases it."""

    def __init__(self, config) -> None:
        self.config = config
        self.keys = Keys(config.MPBOT_KEY_PREFIX)
        self.store = make_store(config)
        self.answers = Answers(config, self.store, self.keys)
        self.sessions = Sessions(config, self.store, self.keys)
        self.metrics = Metrics(config, self.store, self.keys)
        self.links = Links(config)
        self.pusher = make_pusher(config, self.store, self.keys, self.metrics)
        # WeChat's media API (a message's picture or voice by its MediaId) needs the AppSecret.
        api = (
            WeChatAPI(config, self.store, self.keys, self.metrics)
            if config.WECHAT_APPID and config.WECHAT_APPSECRET
            else None
        )
        self.media = Media(config, self.store, self.keys, api)
        self.runner = PoolRunner(config, self._answer) if config.embedded else RQRunner(config, self.store)
        self.reader = Reader(config, self.store, self.keys, self.answers, self.runner, self.links, self.pusher)
        # (A web process with RQ workers never calls the model; its client opens no connection.)
        self.llm = LLM(config)

    def _answer(self, msgid: str, sid: str, question: str, openid: str) -> None:
        run_answer(self, msgid, sid, question, openid)

    def close(self) -> None:
        self.runner.close()
        self.llm.close()
        self.media.close()
        if self.pusher is not None:
            self.pusher.close()
        self.store.close()
