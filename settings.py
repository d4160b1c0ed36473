"""mpbot settings: UPPERCASE values only.

Every value here can be overridden by an environment variable of the same name. Strings are taken
as they are; numbers are parsed; lists and dicts are read as JSON (a dict from the environment is
merged into the one below, so ``TEXTS='{"hint": "..."}'`` changes one text and keeps the rest).
``mpbot/config.py`` is the only reader of this file.
"""

# --- WeChat -------------------------------------------------------------------------------------

# The Token typed into the admin console (设置与开发 > 基本配置 > 服务器配置). Required.
WECHAT_TOKEN = ""
# The account's AppID. Needed in safe/compatible mode, where every message carries it.
WECHAT_APPID = ""
# The EncodingAESKey (43 characters). Set it to answer safe-mode and compatible-mode messages.
WECHAT_ENCODING_AES_KEY = ""
# The key used before the last change in the console; tried when the current one fails.
WECHAT_PREVIOUS_ENCODING_AES_KEY = ""
# The AppSecret (设置与开发 > 基本配置 > 开发者密码). Needed to push late answers (MPBOT_PUSH) and
# to hear voice messages that come without WeChat's own speech recognition (fetching their audio).
# Keep it in the environment, never in this file.
WECHAT_APPSECRET = ""

# --- Pushing late answers (verified accounts only) ----------------------------------------------

# On a verified (微信认证) account, an answer that misses WeChat's window is sent into the chat as
# customer-service (客服) messages when it is finished, instead of waiting for the subscriber's
# next message. Needs WECHAT_APPID and WECHAT_APPSECRET, and this server's IP in the console's IP
# whitelist. Off: the page link and fetch-by-next-message, as on any account.
MPBOT_PUSH = False
# WeChat's API. Tests and proxies point this elsewhere.
WECHAT_API_BASE = "https://api.weixin.qq.com"
# Seconds one call to WeChat's API may take.
WECHAT_API_TIMEOUT = 5.0
# WeChat's rules: after a subscriber's message, at most this many customer-service messages...
MPBOT_PUSH_PER_MESSAGE = 5
# ...within this many seconds (48 hours).
MPBOT_PUSH_WINDOW = 48 * 3600
# access_token fetches allowed per day (Beijing time) for all processes together; the bot needs
# about 12 (one per token lifetime). A guard against a loop burning the account's quota.
WECHAT_TOKEN_DAILY_LIMIT = 200
# After a failure that concerns the whole account (no permission, IP not whitelisted, WeChat
# unreachable, a quota used up), pushing pauses this many seconds and late answers go to the
# page link and the next message, as without push. Each reason is logged once per pause.
MPBOT_PUSH_PAUSE = 600

# --- The model ----------------------------------------------------------------------------------

# Any OpenAI-compatible endpoint: OpenAI, DeepSeek, Qwen, a local Ollama or vLLM.
OPENAI_API_KEY = ""
# Empty means OpenAI itself; e.g. https://api.deepseek.com/v1 or http://127.0.0.1:11434/v1.
OPENAI_BASE_URL = ""
# The model name the endpoint knows.
MPBOT_MODEL = "gpt-4o-mini"
# Seconds one answer may take in all, retries included, before it counts as failed (the answer
# page can wait longer than the chat, so this is well past WeChat's 15 s). A hung call is cut here.
MPBOT_LLM_TIMEOUT = 120.0
# Seconds the endpoint may stay silent: before its answer begins (a model that accepted the call
# and sends nothing), or between two pieces of it. Then the call is tried again (a new attempt,
# as below) with twice the patience (40 s, then what is left of MPBOT_LLM_TIMEOUT: about 58 s by
# default), so a model slow to begin still answers.
MPBOT_FIRST_TOKEN_TIMEOUT = 20.0
# Times a failed model call (429, 5xx, connection refused, a stream broken off, silence) is tried again,
# after 0.5, 1, 2, ... s or the endpoint's Retry-After, while MPBOT_LLM_TIMEOUT allows.
MPBOT_LLM_RETRIES = 3
# Upper bound on the answer's length in tokens; 0 leaves it to the endpoint.
MPBOT_MAX_TOKENS = 0
# The system prompt sent first with every question.
MPBOT_SYSTEM_PROMPT = (
    "你是微信公众号里的助手。回答简洁、准确，用中文回答中文问题。回答会显示在微信聊天里：少用表格，段落短一些。"
)
# Characters of earlier questions and answers sent with each new question (newest first, whole
# turns only). About 1.5 characters a token for Chinese, 4 for English.
MPBOT_CONTEXT_CHARS = 6000
# Turns a session keeps at most.
MPBOT_HISTORY_TURNS = 20

# --- Pictures and voice -------------------------------------------------------------------------

# A picture sent in a chat is answered by the model, with the picture; a question sent within
# MPBOT_PICTURE_TTL seconds after it goes with the picture too. False: pictures get
# TEXTS["unsupported"].
MPBOT_PICTURES = True
# The model for questions with a picture; empty: MPBOT_MODEL. It must take pictures (image_url
# content parts): gpt-4o-mini, qwen-vl-max, glm-4v, or llava / qwen2.5vl on Ollama. DeepSeek's
# chat models do not: set a vision model here, or MPBOT_PICTURES = False.
MPBOT_VISION_MODEL = ""
# What the model is asked with a picture that comes alone.
MPBOT_PICTURE_PROMPT = "请看这张图片：如果图里有问题或要处理的文字，就直接回答；否则简要说明图片的内容。"
# Seconds after a picture during which the subscriber's questions are sent with it.
MPBOT_PICTURE_TTL = 300
# A picture's longest side, in pixels, as sent to the model (larger ones are scaled down).
MPBOT_PICTURE_MAX_SIDE = 1024
# The only hosts a picture's PicUrl is fetched from (WeChat's image CDN; "host:port" for another
# port). A picture elsewhere is fetched by its MediaId from WeChat's API (needs the AppSecret).
MPBOT_MEDIA_HOSTS = ["mmbiz.qpic.cn", "mmbiz.qlogo.cn", "mmsns.qpic.cn"]
# The largest picture or voice file fetched, in bytes, and the seconds fetching one may take.
MPBOT_MEDIA_MAX_BYTES = 10 * 1024 * 1024
MPBOT_MEDIA_TIMEOUT = 5.0
# How long a message's reference to its picture or voice is kept for its job (never the file).
MPBOT_MEDIA_KEEP = 3600
# Voice messages carry WeChat's transcript (Recognition) where the account has speech recognition
# on (WeChat is retiring it). Without it, and with WECHAT_APPID and WECHAT_APPSECRET, the bot
# fetches the audio, converts it and asks a speech-to-text endpoint (POST /audio/transcriptions:
# OpenAI, or a local faster-whisper or SenseVoice server). Empty: OPENAI_BASE_URL and its key.
MPBOT_STT_BASE_URL = ""
MPBOT_STT_API_KEY = ""
# The transcription model; empty turns transcription off (subscribers are asked to type).
MPBOT_STT_MODEL = "whisper-1"
# The language spoken, e.g. "zh" (empty: the model tells by itself).
MPBOT_STT_LANGUAGE = ""
# Seconds one transcription may take.
MPBOT_STT_TIMEOUT = 20.0

# --- Where it runs ------------------------------------------------------------------------------

# Redis for shared state and RQ. Empty: embedded mode, one process with in-memory state.
REDIS_URL = ""
# Connections one web process may open to Redis. Every waiting delivery holds one while it waits
# (over this many, a delivery waits up to 2 s for one, then apologises).
MPBOT_REDIS_MAX_CONNECTIONS = 1000
# Seconds one Redis command may take before the store counts as unreachable (a stall up to twice
# this is waited out): a Redis that hangs gets the subscriber an apology within 2.5 s, while WeChat
# still waits, and /healthz a 503 within a second.
MPBOT_REDIS_TIMEOUT = 1.0
# The RQ queue the LLM jobs go to.
MPBOT_QUEUE = "mpbot"
# Prefix of every Redis key mpbot writes (see mpbot/keys.py).
MPBOT_KEY_PREFIX = "mpbot"
# RQ worker processes `python -m mpbot worker` starts on one host, and model calls each of them
# runs at once (in threads: a call is almost all waiting, and an idle thread costs next to
# nothing). All hosts together need about (messages per second x seconds per answer) of these
# slots, workers x threads x hosts, with room for retries: 2 x 250 carry 50 msg/s of answers
# that take 1-12 s (make bench).
MPBOT_RQ_WORKERS = 2
MPBOT_RQ_THREADS = 250
# A running job's heartbeat lasts this many seconds (renewed every 2 s): a job whose worker was
# killed is known dead this long after, at most...
MPBOT_RQ_JOB_TTL = 10
# ...and found at the next of RQ's registry maintenance passes, every this many seconds on any
# live worker, which runs it again (once; run_answer does not ask the model again for an answer
# that was finished).
MPBOT_RQ_MAINTENANCE = 5
# Threads of the in-process pool that runs model calls in embedded mode (the same sizing rule:
# 256 carry 20 msg/s of answers that take 1-12 s).
MPBOT_EMBEDDED_WORKERS = 256
# Connections one gunicorn web process holds at once (gevent: each is a greenlet, not a thread, so
# a waiting delivery, an idle keep-alive or a client sending a byte a minute costs a few KB).
MPBOT_WEB_CONNECTIONS = 4096
# Base URL of links sent to subscribers (the answer page).
PUBLIC_URL = "http://127.0.0.1:8000"
# Signs answer links. Generated per process in embedded mode; required with Redis.
SECRET_KEY = ""
# When set, /metrics answers requests with `Authorization: Bearer <this>`. Empty: /metrics answers
# only requests from this host itself (loopback, not through a proxy).
MPBOT_METRICS_TOKEN = ""
# The proxies whose X-Forwarded-For header names the real client (addresses or networks, "*" for
# any; gunicorn's forwarded_allow_ips). Anyone else's header is ignored.
MPBOT_FORWARDED_ALLOW_IPS = ["127.0.0.1", "::1"]

# --- Timings (seconds) --------------------------------------------------------------------------

# How long WeChat waits for one delivery before it drops it and sends the next.
MPBOT_WECHAT_TIMEOUT = 5.0
# Deliveries WeChat makes of one message.
MPBOT_DELIVERIES = 3
# How long the last delivery waits for the answer before it replies with the link instead.
# Leave room for the network between WeChat and this server.
MPBOT_DELIVERY_WAIT = 4.5
# Idle seconds before a chat session ends; every message renews it.
MPBOT_SESSION_TTL = 300
# How long answers (and the delivery count of each MsgId) are kept.
MPBOT_ANSWER_TTL = 7 * 24 * 3600
# How long the answer page's links stay valid.
MPBOT_LINK_TTL = 7 * 24 * 3600
# How often a streaming answer is written to the store while it grows: the page and the last
# delivery see text at most this old.
MPBOT_STREAM_INTERVAL = 0.3
# How long the answer page's request for more text waits before it asks again.
MPBOT_PAGE_POLL = 10.0
# Such waiting requests one web process holds at once: per answer link, per client address, in
# all. Over a limit the page is answered at once and asks again 5 s later, so a few clients
# cannot hold the connections WeChat's deliveries need (MPBOT_WEB_CONNECTIONS). Carriers put many phones
# behind one address: keep the per-client limit generous.
MPBOT_POLLS_PER_LINK = 3
MPBOT_POLLS_PER_CLIENT = 20
MPBOT_POLLS_PER_PROCESS = 100
# How long a handled event is remembered, so that WeChat's retries of it run once.
MPBOT_EVENT_TTL = 600
# How long the counters behind /metrics are kept after their last change.
MPBOT_METRICS_TTL = 90 * 24 * 3600

# --- Abuse --------------------------------------------------------------------------------------

# A signed request (a message, or the console's URL check) whose timestamp is further than this
# from the server's clock (seconds) is refused: a recorded request cannot be played again later.
# Within it, each signature is taken with one message only (WeChat's retries of it pass). 0 turns
# the check off, for tests of old samples only: a leaked signed URL would then work forever.
MPBOT_MAX_CLOCK_SKEW = 300
# Questions one subscriber may ask per MPBOT_RATE_WINDOW seconds (commands and fetching answers
# do not count); 0 turns the limit off.
MPBOT_RATE_LIMIT = 6
MPBOT_RATE_WINDOW = 60
# Words (matched ignoring case) that make a question or an answer unwelcome: the subscriber reads
# TEXTS["banned"] instead, and the page shows no text of such an answer.
MPBOT_BANNED_WORDS = []
# A moderation API to ask as well: "package.module:function", called as function(text, kind)
# with kind "question" or "answer", returning True to allow. If it raises, the text is refused.
# With a hook set, answers are not streamed: the text appears once the hook has allowed it.
MPBOT_MODERATION_HOOK = ""

# --- Replies ------------------------------------------------------------------------------------

# A text reply must stay under 2048 bytes of UTF-8.
MPBOT_REPLY_MAX_BYTES = 2047

# Questions a subscriber may have waiting behind the one being answered (one model call per
# subscriber at a time); beyond that the bot asks them to wait.
MPBOT_MAX_QUEUED = 5

# Commands and their aliases; matched after trimming whitespace, ignoring case. The first alias is
# the one the texts name: a word reads 发送「继续」, a /command reads 发送 /chatgpt.
COMMANDS = {
    "start": ["/chatgpt", "/start", "开始"],
    "stop": ["/stop", "结束"],
    "clear": ["/clear", "清空"],
    "next": ["继续", "/next", "/more"],
    "history": ["/history", "历史"],
    "help": ["/help", "帮助"],
}

# In the chat, a command a text names is a link that sends it when tapped (weixin://bizmsgmenu):
# 「继续」 under a long answer, the commands in the help text. False: plain names, same wording.
MPBOT_TAP_LINKS = True

# --- Who gets answers, and the account's own replies -------------------------------------------

# False: the model answers in a chat session, started with /chatgpt and ended by /stop or 5 idle
# minutes. True: every text from every subscriber goes to the model without /chatgpt (a session
# starts by itself; /clear and /stop still clear the history; the welcome and help texts say so).
MPBOT_ALWAYS_ON = False
# Keyword replies, ahead of the model (commands come first): a text that matches gets its reply
# at once, in a session or not, with no model call. Each rule is
#   {"keywords": ["价格", "多少钱"], "match": "exact" or "contains", "reply": "..."}
# matched after trimming, ignoring case ("exact" when left out); "reply" may be a list, of which
# one is picked at random. A reply may carry <a href="...">links</a>.
MPBOT_RULES = []
# A file of more rules, as `python -m mpbot import-rules` writes it from the console's own keyword
# replies (developer mode turns those off). Its follow reply goes before TEXTS["welcome"], its
# default reply before TEXTS["hint"]. A relative path is taken from this file's folder; a missing
# file is no error.
MPBOT_RULES_FILE = "rules.json"
# The custom menu's CLICK buttons: EventKey -> the reply text, or a command (e.g. "/chatgpt") to
# run as if the subscriber had sent it. A key not listed gets no reply (and one log line).
MPBOT_MENU = {}

# Everything the bot says. {start}, {stop}, {clear}, {next}, {history}, {help} are the commands'
# names (see COMMANDS), {url} a link to a page, {part} and {parts} number the parts of a long
# answer, {question} the first words of a question, {ai_label} the text "ai_label". A text named
# "<name>_always_on" replaces "<name>" when MPBOT_ALWAYS_ON is True.
TEXTS = {
    # The label the rules on AI-generated content ask for: in the start text and on the answer page.
    "ai_label": "回答由 AI 生成，仅供参考。",
    # Added after every answer when set, e.g. "\n\n（以上内容由 AI 生成）".
    "answer_label": "",
    "welcome": "欢迎关注！发送{start}开始和 AI 对话，发送{help}查看全部命令。",
    "welcome_always_on": "欢迎关注！直接发送问题，就能和 AI 对话。{ai_label}\n发送{help}查看全部命令。",
    "help": (
        "可用命令：\n"
        "{start}开始对话\n"
        "{stop}结束对话并删除记录\n"
        "{clear}清空对话记录，继续对话\n"
        "{next}查看长回答的下一段，或取回还没看到的回答\n"
        "{history}查看本次对话的全部问答\n"
        "{help}显示本帮助\n"
        "对话开始后直接发送问题即可，空闲 5 分钟后对话自动结束。"
    ),
    "help_always_on": (
        "直接发送问题即可和 AI 对话，空闲 5 分钟后对话记录自动清空。\n"
        "可用命令：\n"
        "{clear}清空对话记录，继续对话\n"
        "{stop}删除对话记录\n"
        "{next}查看长回答的下一段，或取回还没看到的回答\n"
        "{history}查看本次对话的全部问答\n"
        "{help}显示本帮助"
    ),
    "started": "对话已开始，请直接发送问题。{ai_label}\n发送{clear}清空记录，发送{stop}结束对话。",
    "already_started": "对话进行中，请直接发送问题。\n发送{clear}清空记录，发送{stop}结束对话。",
    "stopped": "对话已结束，记录已删除。发送{start}重新开始。",
    "stopped_always_on": "对话记录已删除。直接发送问题，就会开始新的对话。",
    "not_started": "当前没有进行中的对话。发送{start}开始。",
    "not_started_always_on": "当前没有对话记录。直接发送问题即可。",
    "cleared": "对话记录已清空，请继续提问。",
    "hint": "发送{start}开始和 AI 对话，发送{help}查看命令。",
    # The last delivery, when the answer is not finished: no text yet...
    "fallback": '回答还在生成中，<a href="{url}">点此查看回答</a>。\n稍后发送{next}或任意消息，在这里取回回答。',
    "fallback_queued": (
        '上一个问题还在回答中，这个问题排在它后面，<a href="{url}">点此查看回答</a>。\n'
        "稍后发送{next}或任意消息，在这里取回回答。"
    ),
    # ...the same, when the answer will be pushed (MPBOT_PUSH) once it is finished.
    "fallback_push": '回答还在生成中，写好后会直接发到这里。\n也可以<a href="{url}">点此查看回答</a>。',
    "fallback_queued_push": (
        '上一个问题还在回答中，这个问题排在它后面，回答好后会直接发到这里。\n也可以<a href="{url}">点此查看回答</a>。'
    ),
    # ...or after the text so far.
    "partial": '\n……\n（还在生成中，<a href="{url}">点此查看完整回答</a>，稍后发送{next}接着看）',
    # A long answer, part by part.
    "more": '\n\n（{part}/{parts}）发送{next}看下一段，或<a href="{url}">查看全文</a>',
    "last_part": "\n\n（{part}/{parts} 完）",
    # A pushed part that the next pushed message continues.
    "push_more": "\n\n（{part}/{parts}）",
    "answer_end": "（回答完毕，以上就是全部内容）",
    # Before an answer that a later message fetches (or that is pushed): which question it answers.
    "answer_quote": "关于「{question}」：\n\n",
    # Added when a message shows an earlier answer: the message was a new question...
    "note_queued": "\n\n——你刚发的问题已收到，会接着回答，发送{next}查看。",
    # ...or it came outside a session.
    "note_hint": "\n\n——发送{start}开始新的对话。",
    "nothing_more": "没有需要继续看的回答了，请直接发送问题。",
    "too_many": "前面还有几个问题在排队，请等它们回答完再提问。",
    "rate_limited": "提问太快啦，请稍等一分钟再发送。",
    "banned": "抱歉，这个话题暂时无法讨论，换个问题试试吧。",
    "gone": "这个回答已过期。请重新发送问题。",
    "history": '<a href="{url}">点此查看本次对话的全部问答</a>',
    # A voice message that cannot be heard: no Recognition, and no transcription set up.
    "voice_unrecognised": "暂时听不了语音，请打字发送问题。",
    "unsupported": "暂时只能看懂文字、图片和语音，请用文字描述你的问题。",
    "video": "暂时看不了视频。可以发文字、图片或语音给我。",
    # A sticker or anything else WeChat cannot pass on (it sends 【收到不支持的消息类型，暂无法显示】).
    "sticker": "收到你的表情啦。暂时看不懂表情，请用文字描述你的问题。",
    # Before the answer to a voice message: what was heard ({heard}). Empty: nothing.
    "heard": "你说：{heard}\n\n",
    # A picture or voice message, where a question is named (the answer page, 关于「…」).
    "picture_question": "（图片）",
    "voice_question": "（语音）",
    # A text with nothing in it.
    "blank": "没有收到文字，请直接发送问题。",
    "store_down": "服务暂时有点忙，请稍后再试。",
    "error": "抱歉，回答出错了，请稍后重新发送问题。",
    "error_timeout": "抱歉，AI 回答超时了，请稍后重新发送问题。",
    "error_stalled": "抱歉，AI 服务没有响应，请稍后重新发送问题。",
    "error_rate_limited": "抱歉，AI 服务繁忙，请稍等一会儿再发送问题。",
    "error_refused": "抱歉，这个问题暂时无法回答，换个问题试试吧。",
    "error_empty": "抱歉，AI 没有给出回答，请换个说法再试。",
    "error_cancelled": "这个问题在对话结束时取消了，没有回答。",
    "error_banned": "抱歉，这个话题暂时无法讨论，换个问题试试吧。",
    # A picture the model could not be shown...
    "error_no_vision": "抱歉，当前的 AI 模型看不了图片，请用文字描述你的问题。",
    "error_picture_expired": "这张图片已经过期，请重新发送。",
    "error_picture_unavailable": "抱歉，没能取到这张图片，请稍后重新发送。",
    "error_picture_too_large": "这张图片太大了，请截图或压缩后再发送。",
    "error_picture_unreadable": "这张图片打不开，请换一张图片或截图再试。",
    # ...or a voice message that could not be heard.
    "error_voice_expired": "这段语音已经过期，请重新发送。",
    "error_voice_unavailable": "抱歉，没能取到这段语音，请稍后重新发送，或打字发送问题。",
    "error_voice_too_large": "这段语音太长了，请分成几段发送，或打字发送问题。",
    "error_voice_unreadable": "这段语音无法播放，请重新录一段，或打字发送问题。",
    "error_voice_failed": "抱歉，语音转文字失败了，请稍后再试，或打字发送问题。",
    "error_voice_empty": "没有听清这段语音，请再说一遍，或打字发送问题。",
    "error_voice_off": "暂时听不了语音，请打字发送问题。",
    # Added to an answer the model stopped at its token limit (MPBOT_MAX_TOKENS or its own).
    "cut_by_length": "\n\n（回答太长，到这里被截断了。发送「接着写」可以让 AI 接着回答。）",
    # The answer page.
    "page_title": "回答",
    "page_question": "问题",
    "page_queued": "排队中：上一个问题回答完就开始……",
    "page_generating": "正在生成，内容会自动出现……",
    "page_done": "回答完毕。",
    "page_gone": "这个回答已过期或不存在。",
    "page_offline": "网络不太好，正在重试……",
    "page_invalid": "链接无效或已过期，无法查看。",
    "page_store_down": "服务暂时不可用，请稍后刷新。",
    "page_history_title": "对话记录",
    "page_history_empty": "这次对话还没有问答，或者对话已结束、记录已删除。",
    "page_history_index": "本次对话的问题",
    # Under a link that no longer works: what to do next.
    "page_next": "回到公众号对话里发送{next}，可以取回还没看完的回答；也可以重新发送问题。",
    # The server's own address (/), and pages that do not exist.
    "page_home_title": "公众号助手",
    "page_home": "这是一个微信公众号的自动回复服务。在公众号里发送消息，就能和 AI 对话。",
    "page_not_found": "这个页面不存在。",
    "page_error": "出错了，请稍后再试。",
}
