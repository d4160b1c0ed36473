"""Emoticons as WeChat sends them, turned into words before the model reads them.

A face picked from WeChat's panel arrives inside a text's Content as a code (``/::)``) or a name
in brackets (``[微笑]``, ``[微笑]`` in traditional script, ``[Smile]`` from an English client). The
model would read ``/::)`` as punctuation; ``readable`` writes each one as （表情：微笑）.

The table is WeChat's own: the 139 faces of ``src/emoji/emoji_data.ts`` in
wechat-miniprogram/miniprogram-component-plus (commit b883123), with two codes corrected to what
WeChat's article script writes (``/::'(``, ``/::'|``); see tests/data/wechat-samples/SOURCES.md.
"""

import re

FACES: dict[str, list[str]] = {
    # name: the forms WeChat sends it in (the classic code, then [中文], [繁體], [English])
    "微笑": ["/::)", "[微笑]", "[Smile]"],
    "撇嘴": ["/::~", "[撇嘴]", "[Grimace]"],
    "色": ["/::B", "[色]", "[Drool]"],
    "发呆": ["/::|", "[发呆]", "[發呆]", "[Scowl]"],
    "得意": ["/:8-)", "[得意]", "[CoolGuy]"],
    "流泪": ["/::<", "[流泪]", "[流淚]", "[Sob]"],
    "害羞": ["/::$", "[害羞]", "[Shy]"],
    "闭嘴": ["/::X", "[闭嘴]", "[閉嘴]", "[Silent]"],
    "睡": ["/::Z", "[睡]", "[Sleep]"],
    "大哭": ["/::'(", "[大哭]", "[Cry]"],
    "尴尬": ["/::-|", "[尴尬]", "[尷尬]", "[Awkward]"],
    "发怒": ["/::@", "[发怒]", "[發怒]", "[Angry]"],
    "调皮": ["/::P", "[调皮]", "[調皮]", "[Tongue]"],
    "呲牙": ["/::D", "[呲牙]", "[Grin]"],
    "惊讶": ["/::O", "[惊讶]", "[驚訝]", "[Surprise]"],
    "难过": ["/::(", "[难过]", "[難過]", "[Frown]"],
    "酷": ["/::+", "[酷]", "[Ruthless]"],
    "冷汗": ["/:--b", "[冷汗]", "[Blush]"],
    "抓狂": ["/::Q", "[抓狂]", "[Scream]"],
    "吐": ["/::T", "[吐]", "[Puke]"],
    "偷笑": ["/:,@P", "[偷笑]", "[Chuckle]"],
    "愉快": ["/:,@-D", "[愉快]", "[Joyful]"],
    "白眼": ["/::d", "[白眼]", "[Slight]"],
    "傲慢": ["/:,@o", "[傲慢]", "[Smug]"],
    "饥饿": ["/::g", "[饥饿]", "[饑餓]", "[Hungry]"],
    "困": ["/:|-)", "[困]", "[累]", "[Drowsy]"],
    "惊恐": ["/::!", "[惊恐]", "[驚恐]", "[Panic]"],
    "流汗": ["/::L", "[流汗]", "[Sweat]"],
    "憨笑": ["/::>", "[憨笑]", "[大笑]", "[Laugh]"],
    "悠闲": ["/::,@", "[悠闲]", "[悠閑]", "[Commando]"],
    "奋斗": ["/:,@f", "[奋斗]", "[奮鬥]", "[Determined]"],
    "咒骂": ["/::-S", "[咒骂]", "[咒罵]", "[Scold]"],
    "疑问": ["/:?", "[疑问]", "[疑問]", "[Shocked]"],
    "嘘": ["/:,@x", "[嘘]", "[噓]", "[Shhh]"],
    "晕": ["/:,@@", "[晕]", "[暈]", "[Dizzy]"],
    "疯了": ["/::8", "[疯了]", "[瘋了]", "[Tormented]"],
    "衰": ["/:,@!", "[衰]", "[Toasted]"],
    "骷髅": ["/:!!!", "[骷髅]", "[骷髏頭]", "[Skull]"],
    "敲打": ["/:xx", "[敲打]", "[Hammer]"],
    "再见": ["/:bye", "[再见]", "[再見]", "[Wave]"],
    "擦汗": ["/:wipe", "[擦汗]", "[Speechless]"],
    "抠鼻": ["/:dig", "[抠鼻]", "[摳鼻]", "[NosePick]"],
    "鼓掌": ["/:handclap", "[鼓掌]", "[Clap]"],
    "糗大了": ["/:&-(", "[糗大了]", "[羞辱]", "[Shame]"],
    "坏笑": ["/:B-)", "[坏笑]", "[壞笑]", "[Trick]"],
    "左哼哼": ["/:<@", "[左哼哼]", "[Bah！L]"],
    "右哼哼": ["/:@>", "[右哼哼]", "[Bah！R]"],
    "哈欠": ["/::-O", "[哈欠]", "[Yawn]"],
    "鄙视": ["/:>-|", "[鄙视]", "[鄙視]", "[Pooh-pooh]"],
    "委屈": ["/:P-(", "[委屈]", "[Shrunken]"],
    "快哭了": ["/::'|", "[快哭了]", "[TearingUp]"],
    "阴险": ["/:X-)", "[阴险]", "[陰險]", "[Sly]"],
    "亲亲": ["/::*", "[亲亲]", "[親親]", "[Kiss]"],
    "吓": ["/:@x", "[吓]", "[嚇]", "[Wrath]"],
    "可怜": ["/:8*", "[可怜]", "[可憐]", "[Whimper]"],
    "菜刀": ["/:pd", "[菜刀]", "[Cleaver]"],
    "西瓜": ["/:<W>", "[西瓜]", "[Watermelon]"],
    "啤酒": ["/:beer", "[啤酒]", "[Beer]"],
    "篮球": ["/:basketb", "[篮球]", "[籃球]", "[Basketball]"],
    "乒乓": ["/:oo", "[乒乓]", "[PingPong]"],
    "咖啡": ["/:coffee", "[咖啡]", "[Coffee]"],
    "饭": ["/:eat", "[饭]", "[飯]", "[Rice]"],
    "猪头": ["/:pig", "[猪头]", "[豬頭]", "[Pig]"],
    "玫瑰": ["/:rose", "[玫瑰]", "[Rose]"],
    "凋谢": ["/:fade", "[凋谢]", "[枯萎]", "[Wilt]"],
    "嘴唇": ["/:showlove", "[嘴唇]", "[Lips]"],
    "爱心": ["/:heart", "[爱心]", "[愛心]", "[Heart]"],
    "心碎": ["/:break", "[心碎]", "[BrokenHeart]"],
    "蛋糕": ["/:cake", "[蛋糕]", "[Cake]"],
    "闪电": ["/:li", "[闪电]", "[閃電]", "[Lightning]"],
    "炸弹": ["/:bome", "[炸弹]", "[炸彈]", "[Bomb]"],
    "刀": ["/:kn", "[刀]", "[Dagger]"],
    "足球": ["/:footb", "[足球]", "[Soccer]"],
    "瓢虫": ["/:ladybug", "[瓢虫]", "[甲蟲]", "[Ladybug]"],
    "便便": ["/:shit", "[便便]", "[Poop]"],
    "月亮": ["/:moon", "[月亮]", "[Moon]"],
    "太阳": ["/:sun", "[太阳]", "[太陽]", "[Sun]"],
    "礼物": ["/:gift", "[礼物]", "[禮物]", "[Gift]"],
    "拥抱": ["/:hug", "[拥抱]", "[擁抱]", "[Hug]"],
    "强": ["/:strong", "[强]", "[強]", "[ThumbsUp]"],
    "弱": ["/:weak", "[弱]", "[ThumbsDown]"],
    "握手": ["/:share", "[握手]", "[Shake]"],
    "胜利": ["/:v", "[胜利]", "[勝利]", "[Peace]"],
    "抱拳": ["/:@)", "[抱拳]", "[Fight]"],
    "勾引": ["/:jj", "[勾引]", "[Beckon]"],
    "拳头": ["/:@@", "[拳头]", "[拳頭]", "[Fist]"],
    "差劲": ["/:bad", "[差劲]", "[差勁]", "[Pinky]"],
    "爱你": ["/:lvu", "[爱你]", "[愛你]", "[RockOn]"],
    "NO": ["/:no", "[NO]", "[Nuh-uh]"],
    "OK": ["/:ok", "[OK]"],
    "爱情": ["/:love", "[爱情]", "[愛情]", "[InLove]"],
    "飞吻": ["/:<L>", "[飞吻]", "[飛吻]", "[Blowkiss]"],
    "跳跳": ["/:jump", "[跳跳]", "[Waddle]"],
    "发抖": ["/:shake", "[发抖]", "[發抖]", "[Tremble]"],
    "怄火": ["/:<O>", "[怄火]", "[噴火]", "[Aaagh!]"],
    "转圈": ["/:circle", "[转圈]", "[轉圈]", "[Twirl]"],
    "磕头": ["/:kotow", "[磕头]", "[磕頭]", "[Kotow]"],
    "回头": ["/:turn", "[回头]", "[回頭]", "[Dramatic]"],
    "跳绳": ["/:skip", "[跳绳]", "[跳繩]", "[JumpRope]"],
    "投降": ["/:oY", "[投降]", "[Surrender]"],
    "激动": ["/:#-0", "[激动]", "[激動]", "[Hooray]"],
    "乱舞": ["/:hiphot", "[乱舞]", "[亂舞]", "[Meditate]"],
    "献吻": ["/:kiss", "[献吻]", "[獻吻]", "[Smooch]"],
    "左太极": ["/:<&", "[左太极]", "[左太極]", "[TaiChi L]"],
    "右太极": ["/:&>", "[右太极]", "[右太極]", "[TaiChi R]"],
    "嘿哈": ["[嘿哈]", "[吼嘿]", "[Hey]"],
    "捂脸": ["[捂脸]", "[掩面]", "[Facepalm]"],
    "奸笑": ["[奸笑]", "[Smirk]"],
    "机智": ["[机智]", "[機智]", "[Smart]"],
    "皱眉": ["[皱眉]", "[皺眉]", "[Moue]"],
    "耶": ["[耶]", "[歐耶]", "[Yeah!]"],
    "茶": ["[茶]", "[Tea]"],
    "红包": ["[红包]", "[Packet]"],
    "蜡烛": ["[蜡烛]", "[蠟燭]", "[Candle]"],
    "福": ["[福]", "[Blessing]"],
    "鸡": ["[鸡]", "[小雞]", "[Chick]"],
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
    "Emm": ["[Emm]"],
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


def readable(text: str) -> str:
    """``text`` with every emoticon code or bracketed name written as （表情：name）. A code
    is part of a path when it follows "/", ":" or "." ("a//::)"), or when it ends in a letter and
    follows a letter or digit ("host/:ok"), unless an emoticon ends there (/::B/::|)."""
    last = 0

    def word(m: re.Match) -> str:
        nonlocal last
        form, at = m.group(0), m.start()
        before = text[at - 1] if at > 0 and at != last else " "
        if form[0] == "/" and (before in "/:." or (form[-1].isalpha() and before.isascii() and before.isalnum())):
            return form
        last = m.end()
        return f"（表情：{_NAMES[form]}）"

    return _FACE.sub(word, text)
