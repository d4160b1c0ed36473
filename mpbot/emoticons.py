"""Emoticons as WeChat sends them, turned into words before the model reads them.

A face picked from WeChat's panel arrives inside a text's Content as a code (``/::)``) or a name
in brackets (``[微笑]``, or in traditional script). The model would read ``/::)`` as punctuation;
``readable`` writes each one as （表情：微笑）. (The English names an English client sends, such as
``[Smile]``, read well as they are, and ``[OK]`` in a log line is no face: they are left alone.)

The table is WeChat's own: the 139 faces of ``src/emoji/emoji_data.ts`` in
wechat-miniprogram/miniprogram-component-plus (commit b883123), with two codes corrected to what
WeChat's article script writes (``/::'(``, ``/::'|``); see tests/data/wechat-samples/SOURCES.md.
"""

import re

FACES: dict[str, list[str]] = {
    # name: the forms WeChat sends it in (the classic code, then [中文], [繁體])
    "微笑": ["/::)", "[微笑]"],
    "撇嘴": ["/::~", "[撇嘴]"],
    "色": ["/::B", "[色]"],
    "发呆": ["/::|", "[发呆]", "[發呆]"],
    "得意": ["/:8-)", "[得意]"],
    "流泪": ["/::<", "[流泪]", "[流淚]"],
    "害羞": ["/::$", "[害羞]"],
    "闭嘴": ["/::X", "[闭嘴]", "[閉嘴]"],
    "睡": ["/::Z", "[睡]"],
    "大哭": ["/::'(", "[大哭]"],
    "尴尬": ["/::-|", "[尴尬]", "[尷尬]"],
    "发怒": ["/::@", "[发怒]", "[發怒]"],
    "调皮": ["/::P", "[调皮]", "[調皮]"],
    "呲牙": ["/::D", "[呲牙]"],
    "惊讶": ["/::O", "[惊讶]", "[驚訝]"],
    "难过": ["/::(", "[难过]", "[難過]"],
    "酷": ["/::+", "[酷]"],
    "冷汗": ["/:--b", "[冷汗]"],
    "抓狂": ["/::Q", "[抓狂]"],
    "吐": ["/::T", "[吐]"],
    "偷笑": ["/:,@P", "[偷笑]"],
    "愉快": ["/:,@-D", "[愉快]"],
    "白眼": ["/::d", "[白眼]"],
    "傲慢": ["/:,@o", "[傲慢]"],
    "饥饿": ["/::g", "[饥饿]", "[饑餓]"],
    "困": ["/:|-)", "[困]", "[累]"],
    "惊恐": ["/::!", "[惊恐]", "[驚恐]"],
    "流汗": ["/::L", "[流汗]"],
    "憨笑": ["/::>", "[憨笑]", "[大笑]"],
    "悠闲": ["/::,@", "[悠闲]", "[悠閑]"],
    "奋斗": ["/:,@f", "[奋斗]", "[奮鬥]"],
    "咒骂": ["/::-S", "[咒骂]", "[咒罵]"],
    "疑问": ["/:?", "[疑问]", "[疑問]"],
    "嘘": ["/:,@x", "[嘘]", "[噓]"],
    "晕": ["/:,@@", "[晕]", "[暈]"],
    "疯了": ["/::8", "[疯了]", "[瘋了]"],
    "衰": ["/:,@!", "[衰]"],
    "骷髅": ["/:!!!", "[骷髅]", "[骷髏頭]"],
    "敲打": ["/:xx", "[敲打]"],
    "再见": ["/:bye", "[再见]", "[再見]"],
    "擦汗": ["/:wipe", "[擦汗]"],
    "抠鼻": ["/:dig", "[抠鼻]", "[摳鼻]"],
    "鼓掌": ["/:handclap", "[鼓掌]"],
    "糗大了": ["/:&-(", "[糗大了]", "[羞辱]"],
    "坏笑": ["/:B-)", "[坏笑]", "[壞笑]"],
    "左哼哼": ["/:<@", "[左哼哼]", "[Bah！L]"],
    "右哼哼": ["/:@>", "[右哼哼]", "[Bah！R]"],
    "哈欠": ["/::-O", "[哈欠]"],
    "鄙视": ["/:>-|", "[鄙视]", "[鄙視]"],
    "委屈": ["/:P-(", "[委屈]"],
    "快哭了": ["/::'|", "[快哭了]"],
    "阴险": ["/:X-)", "[阴险]", "[陰險]"],
    "亲亲": ["/::*", "[亲亲]", "[親親]"],
    "吓": ["/:@x", "[吓]", "[嚇]"],
    "可怜": ["/:8*", "[可怜]", "[可憐]"],
    "菜刀": ["/:pd", "[菜刀]"],
    "西瓜": ["/:<W>", "[西瓜]"],
    "啤酒": ["/:beer", "[啤酒]"],
    "篮球": ["/:basketb", "[篮球]", "[籃球]"],
    "乒乓": ["/:oo", "[乒乓]"],
    "咖啡": ["/:coffee", "[咖啡]"],
    "饭": ["/:eat", "[饭]", "[飯]"],
    "猪头": ["/:pig", "[猪头]", "[豬頭]"],
    "玫瑰": ["/:rose", "[玫瑰]"],
    "凋谢": ["/:fade", "[凋谢]", "[枯萎]"],
    "嘴唇": ["/:showlove", "[嘴唇]"],
    "爱心": ["/:heart", "[爱心]", "[愛心]"],
    "心碎": ["/:break", "[心碎]"],
    "蛋糕": ["/:cake", "[蛋糕]"],
    "闪电": ["/:li", "[闪电]", "[閃電]"],
    "炸弹": ["/:bome", "[炸弹]", "[炸彈]"],
    "刀": ["/:kn", "[刀]"],
    "足球": ["/:footb", "[足球]"],
    "瓢虫": ["/:ladybug", "[瓢虫]", "[甲蟲]"],
    "便便": ["/:shit", "[便便]"],
    "月亮": ["/:moon", "[月亮]"],
    "太阳": ["/:sun", "[太阳]", "[太陽]"],
    "礼物": ["/:gift", "[礼物]", "[禮物]"],
    "拥抱": ["/:hug", "[拥抱]", "[擁抱]"],
    "强": ["/:strong", "[强]", "[強]"],
    "弱": ["/:weak", "[弱]"],
    "握手": ["/:share", "[握手]"],
    "胜利": ["/:v", "[胜利]", "[勝利]"],
    "抱拳": ["/:@)", "[抱拳]"],
    "勾引": ["/:jj", "[勾引]"],
    "拳头": ["/:@@", "[拳头]", "[拳頭]"],
    "差劲": ["/:bad", "[差劲]", "[差勁]"],
    "爱你": ["/:lvu", "[爱你]", "[愛你]"],
    "NO": ["/:no"],
    "OK": ["/:ok"],
    "爱情": ["/:love", "[爱情]", "[愛情]"],
    "飞吻": ["/:<L>", "[飞吻]", "[飛吻]"],
    "跳跳": ["/:jump", "[跳跳]"],
    "发抖": ["/:shake", "[发抖]", "[發抖]"],
    "怄火": ["/:<O>", "[怄火]", "[噴火]"],
    "转圈": ["/:circle", "[转圈]", "[轉圈]"],
    "磕头": ["/:kotow", "[磕头]", "[磕頭]"],
    "回头": ["/:turn", "[回头]", "[回頭]"],
    "跳绳": ["/:skip", "[跳绳]", "[跳繩]"],
    "投降": ["/:oY", "[投降]"],
    "激动": ["/:#-0", "[激动]", "[激動]"],
    "乱舞": ["/:hiphot", "[乱舞]", "[亂舞]"],
    "献吻": ["/:kiss", "[献吻]", "[獻吻]"],
    "左太极": ["/:<&", "[左太极]", "[左太極]"],
    "右太极": ["/:&>", "[右太极]", "[右太極]"],
    "嘿哈": ["[嘿哈]", "[吼嘿]"],
    "捂脸": ["[捂脸]", "[掩面]"],
    "奸笑": ["[奸笑]"],
    "机智": ["[机智]", "[機智]"],
    "皱眉": ["[皱眉]", "[皺眉]"],
    "耶": ["[耶]", "[歐耶]"],
    "茶": ["[茶]"],
    "红包": ["[红包]"],
    "蜡烛": ["[蜡烛]", "[蠟燭]"],
    "福": ["[福]"],
    "鸡": ["[鸡]", "[小雞]"],
    "笑脸": ["[笑脸]"],
    "生病": ["[生病]"],
    "破涕为笑": ["[破涕为笑]"],
    "吐舌": ["[吐舌]"],
    "脸红": ["[脸红]"],
    "恐惧": ["[恐惧]"],
    "失望": ["[失望]"],
    "无语": ["[无语]"],
    "鬼魂": ["[鬼魂]"],
    "合十": ["[合十]"],
    "强壮": ["[强壮]"],
    "庆祝": ["[庆祝]"],
    "吃瓜": ["[吃瓜]"],
    "加油": ["[加油]"],
    "汗": ["[汗]"],
    "天啊": ["[天啊]"],
    "Emm": [],
    "社会社会": ["[社会社会]"],
    "旺柴": ["[旺柴]"],
    "好的": ["[好的]"],
    "打脸": ["[打脸]"],
    "哇": ["[哇]"],
}

_NAMES = {form: name for name, forms in FACES.items() for form in forms}


def _pattern(form: str) -> str:
    # A code is not the start of a word: "/:okay" is left alone.
    tail = r"(?![A-Za-z])" if form[-1].isalpha() else ""
    return re.escape(form) + tail


# Longest first, so that /::-O is not read as /::- and O.
_FACE = re.compile("|".join(_pattern(form) for form in sorted(_NAMES, key=len, reverse=True)))
# A slash code is no face after a letter or what carries on a path, a URL or a variable
# ("$PATH/::)", "a.com/:?q=1"), nor before what carries one on ("/:v/users", "/:ok=1"), unless
# another code is there (/::B/::|).
_JOINS_BEFORE = re.compile(r"[A-Za-z/:=&$_%#@\\]")
_JOINS_AFTER = re.compile(r"[/=&]")


def readable(text: str) -> str:
    """``text`` with every emoticon code or bracketed name written as （表情：name）. A slash code
    counts only where it does not join a path, a URL or a variable (see _JOINS_BEFORE), so that
    those keep what looks like one ("echo $PATH/::)", "a.com/:?q=1")."""
    found = [m for m in _FACE.finditer(text)]
    taken: set[int] = set()
    spans = {m.start(): m.end() for m in found}
    ends = {m.end() for m in found}

    def apart(at: int, before: bool) -> bool:
        if at < 0 or at >= len(text) or (at + 1 in ends if before else at in spans):
            return True
        return not (_JOINS_BEFORE if before else _JOINS_AFTER).match(text[at])

    for m in found:
        form = m.group(0)
        if form[0] != "/" or (apart(m.start() - 1, True) and apart(m.end(), False)):
            taken.add(m.start())
    out, pos = [], 0
    for m in found:
        if m.start() in taken:
            out.append(text[pos : m.start()])
            out.append(f"（表情：{_NAMES[m.group(0)]}）")
            pos = m.end()
    out.append(text[pos:])
    return "".join(out)
