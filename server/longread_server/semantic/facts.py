"""What a question pins down that an embedding does not weigh: its numbers and units, periods
and dates, negation, comparisons and names.

Embeddings place "revenue in Q3" next to "revenue in Q4" (a static model scores the pair above
a true paraphrase), so a reuse must first agree on these facts exactly; the similarity only
decides between questions that already agree. The rules err towards a miss: a word read as a
fact when it is not costs a model call, a fact missed costs a wrong answer.

English and Chinese are read here; other scripts keep their digits, Latin names and quoted
terms as facts. Names come from the question itself (capitalised words, identifiers, quoted
terms) and from the document (``Lexicon``: its proper nouns, and Chinese names before a place
or organisation word), since a question may write a name in lower case or, in Chinese, with
no mark at all.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

# ---- numbers ----

_DIGITS = re.compile(r"\d+(?:[.,]\d+)*")
_THOUSANDS = re.compile(r"^\d{1,3}(?:,\d{3})+$")
_EN_NUMBERS = {
    "zero": 0, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
    "eight": 8, "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13,
    "fourteen": 14, "fifteen": 15, "sixteen": 16, "seventeen": 17, "eighteen": 18,
    "nineteen": 19, "twenty": 20, "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60,
    "seventy": 70, "eighty": 80, "ninety": 90, "hundred": 100, "dozen": 12, "half": 0.5,
    "double": 2, "twice": 2, "triple": 3,
}  # fmt: skip
_EN_ORDINALS = {
    "first": 1, "second": 2, "third": 3, "fourth": 4, "fifth": 5, "sixth": 6, "seventh": 7,
    "eighth": 8, "ninth": 9, "tenth": 10, "last": -1, "final": -1,
}  # fmt: skip
_ZH_DIGITS = {"零": 0, "一": 1, "二": 2, "两": 2, "三": 3, "四": 4, "五": 5, "六": 6, "七": 7,
              "八": 8, "九": 9, "十": 10}  # fmt: skip
# A Chinese numeral counts only next to what makes it one: a measure word or unit after it, or
# 第/前/后 before it (一 alone is in too many words: 一些, 一直, 统一).
_ZH_NUMERAL = re.compile(
    r"(第|前|后|最后)?([零一二两三四五六七八九十百千]+)"
    r"(?=(个|名|家|项|次|年|月|日|号|季度|天|周|小时|倍|成|条|款|批|位|种|类|点|分钟|元|万|亿|%|％))"
)
_ZH_ORDINAL = re.compile(r"第([零一二两三四五六七八九十\d]+)")

# ---- units and magnitudes ----

_UNITS = {
    "mg": "mg", "milligram": "mg", "milligrams": "mg", "g": "g", "gram": "g", "grams": "g",
    "kg": "kg", "kilogram": "kg", "kilograms": "kg", "mcg": "mcg", "µg": "mcg", "μg": "mcg",
    "microgram": "mcg", "micrograms": "mcg", "ml": "ml", "millilitre": "ml", "milliliter": "ml",
    "l": "l", "litre": "l", "liter": "l", "litres": "l", "liters": "l", "km": "km",
    "kilometre": "km", "kilometer": "km", "kilometres": "km", "kilometers": "km",
    "mile": "mile", "miles": "mile", "m": "m", "metre": "m", "meter": "m", "metres": "m",
    "meters": "m", "cm": "cm", "mm": "mm", "%": "%", "percent": "%", "pct": "%",
    "percentage": "%", "usd": "usd", "$": "usd", "dollar": "usd", "dollars": "usd",
    "eur": "eur", "€": "eur", "euro": "eur", "euros": "eur", "gbp": "gbp", "£": "gbp",
    "pound": "gbp", "pounds": "gbp", "rmb": "cny", "cny": "cny", "yuan": "cny", "¥": "cny",
    "thousand": "e3", "k": "e3", "million": "e6", "millions": "e6", "mn": "e6", "m$": "e6",
    "billion": "e9", "billions": "e9", "bn": "e9", "trillion": "e12",
    "hour": "hour", "hours": "hour", "minute": "minute",
    "minutes": "minute", "second": "second_t", "seconds": "second_t", "day": "day",
    "days": "day", "week": "week", "weeks": "week",
    "month": "month", "months": "month", "year": "year", "years": "year",
    "tonne": "t", "tonnes": "t",
    "ton": "t", "tons": "t", "mb": "mb", "gb": "gb", "tb": "tb", "ms": "ms",
}  # fmt: skip
_ZH_UNITS = (
    ("百分之", "%"), ("毫克", "mg"), ("微克", "mcg"), ("千克", "kg"), ("公斤", "kg"),
    ("克", "g"), ("毫升", "ml"), ("升", "l"), ("公里", "km"), ("千米", "km"), ("英里", "mile"),
    ("厘米", "cm"), ("毫米", "mm"), ("米", "m"), ("美元", "usd"), ("欧元", "eur"),
    ("英镑", "gbp"), ("人民币", "cny"), ("万元", "e4"), ("亿元", "e8"), ("千元", "e3"),
    ("元", "cny"), ("万", "e4"), ("亿", "e8"), ("小时", "hour"), ("分钟", "minute"),
    ("每天", "per_day"), ("每日", "per_day"), ("天", "day"), ("每周", "per_week"),
    ("周", "week"), ("星期", "week"), ("每月", "per_month"), ("个月", "month"),
    ("每年", "per_year"), ("吨", "t"),
)  # fmt: skip
# "second" is a unit only after a number; as a word it is an ordinal.
_UNIT_AFTER_NUMBER_ONLY = frozenset(
    {"second", "seconds", "m", "l", "g", "k", "ms", "mn", "hour", "hours", "minute", "minutes",
     "day", "days", "week", "weeks", "month", "months", "year", "years"}
)  # fmt: skip
# A rate, however it is worded: "per year", "a year", "annual", "yearly", 每年.
_RATE_WORDS = {"hourly": "per_hour", "daily": "per_day", "weekly": "per_week",
               "monthly": "per_month", "annual": "per_year", "annually": "per_year",
               "yearly": "per_year"}  # fmt: skip
_RATE = re.compile(r"\b(?:per|a|an|each|every)\s+(hour|day|week|month|year|annum)\b")
_RATES = frozenset(("per_hour", "per_day", "per_week", "per_month", "per_year"))

# ---- periods and dates ----

_MONTHS = {
    "january": 1, "jan": 1, "february": 2, "feb": 2, "march": 3, "mar": 3, "april": 4,
    "apr": 4, "may": 5, "june": 6, "jun": 6, "july": 7, "jul": 7, "august": 8, "aug": 8,
    "september": 9, "sep": 9, "sept": 9, "october": 10, "oct": 10, "november": 11, "nov": 11,
    "december": 12, "dec": 12,
}  # fmt: skip
_WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_EN_PERIODS = (
    (re.compile(r"\bq([1-4])\b"), "q{0}"),
    (re.compile(r"\b(?:quarter|qtr)\s*([1-4])\b"), "q{0}"),
    (re.compile(r"\b([1-4])(?:st|nd|rd|th)\s+quarter\b"), "q{0}"),
    (re.compile(r"\bh([12])\b"), "h{0}"),
    (re.compile(r"\bfiscal(?:\s+year)?\b"), "fiscal"),
    (re.compile(r"\b(?:last|previous|prior|past)\s+(year|quarter|month|week)\b"), "prev_{0}"),
    (re.compile(r"\b(?:this|current|the current)\s+(year|quarter|month|week)\b"), "this_{0}"),
    (re.compile(r"\b(?:next|coming|following|upcoming)\s+(year|quarter|month|week)\b"), "next_{0}"),
    (re.compile(r"\b(yesterday|today|tomorrow|tonight)\b"), "{0}"),
    (re.compile(r"\b(morning|afternoon|evening|night|overnight|weekend|weekday)s?\b"), "{0}"),
    (re.compile(r"\b(spring|summer|autumn|winter)\b"), "{0}"),
    (re.compile(r"\boff[- ]peak\b"), "offpeak"),
    (re.compile(r"\b(?:year[- ](?:on|over)[- ]year|yoy|y/y)\b"), "yoy"),
    (re.compile(r"\b(?:quarter|month|week)[- ](?:on|over)[- ](?:quarter|month|week)\b"), "pop"),
    (re.compile(r"\b(?:peak|rush)[- ]hours?\b"), "peak_time"),
    (re.compile(r"\b(a\.?m\.?|p\.?m\.?)(?=\W|$)"), "ampm_{0}"),
)  # fmt: skip
_EN_ORDINAL_PERIOD = re.compile(r"\b(first|second|third|fourth|1st|2nd|3rd|4th)\s+(quarter|half)\b")
_ZH_PERIODS = (
    ("上半年", "h1"), ("下半年", "h2"), ("前年", "prev2_year"), ("去年", "prev_year"),
    ("上一年", "prev_year"), ("上年", "prev_year"), ("今年", "this_year"), ("本年", "this_year"),
    ("明年", "next_year"), ("上季度", "prev_quarter"), ("上个季度", "prev_quarter"),
    ("本季度", "this_quarter"), ("下季度", "next_quarter"), ("下个季度", "next_quarter"),
    ("上个月", "prev_month"), ("上月", "prev_month"), ("本月", "this_month"),
    ("这个月", "this_month"), ("下个月", "next_month"), ("下月", "next_month"),
    ("上周", "prev_week"), ("本周", "this_week"), ("下周", "next_week"), ("昨天", "yesterday"),
    ("今天", "today"), ("明天", "tomorrow"), ("上午", "morning"), ("早上", "morning"),
    ("下午", "afternoon"), ("晚上", "evening"), ("夜间", "night"), ("凌晨", "night"),
    ("周末", "weekend"), ("工作日", "weekday"), ("平峰", "offpeak"), ("低峰", "offpeak"),
    ("高峰", "peak_time"), ("节假日", "holiday"), ("假期", "holiday"), ("春季", "spring"),
    ("同比", "yoy"), ("环比", "pop"),
    ("夏季", "summer"),
    ("秋季", "autumn"), ("冬季", "winter"), ("财年", "fiscal"),
)  # fmt: skip
_ZH_QUARTER = re.compile(r"(?:第)?([一二三四1-4])季度")
_ZH_DATE_PART = re.compile(r"([零一二两三四五六七八九十\d]+)(年|月|日|号)")
_ZH_WEEKDAY = re.compile(r"(?:周|星期|礼拜)([一二三四五六日天])")

# ---- negation ----

_EN_NEGATION = re.compile(
    r"\b(?:not|no|never|none|nobody|nothing|neither|nor|without|cannot|except|excluding|"
    r"exclude[sd]?|lack(?:s|ed|ing)?|absent|fail(?:s|ed)?\s+to|outside|other\s+than|"
    r"apart\s+from|besides|\w+n't)\b"
)
_ZH_NEGATION = re.compile(r"不|没|未|无|非|否|别|勿|莫")
# Words with a negation character that negate nothing (不同 "different", 非常 "very", 是否
# "whether", 未来 "future", 无论 "whatever", 别的 "other", 特别 "especially").
_ZH_NOT_NEGATION = (
    "不同", "不断", "不少", "不过", "不仅", "不管", "不久", "不论", "不但", "非常", "是否",
    "否则", "能否", "可否", "与否", "未来", "无论", "别的", "特别", "区别", "分别", "类别",
    "级别", "告别", "差别", "识别", "并非", "莫名",
)  # fmt: skip

# ---- comparisons ----

_CJK_CHARS = "\u3400-\u4dbf\u4e00-\u9fff"

_EN_COMPARISONS = {
    "max": ("highest", "largest", "biggest", "greatest", "most", "maximum", "max", "peak",
            "top", "best", "longest", "heaviest", "strongest", "fastest"),
    "min": ("lowest", "smallest", "least", "fewest", "minimum", "min", "worst", "bottom",
            "shortest", "weakest", "slowest"),
    "up": ("increase", "increased", "increases", "increasing", "rise", "rose", "risen",
           "rising", "rises", "grow", "grew", "grown", "growth", "growing", "grows", "gain",
           "gained", "gains", "higher", "more", "above", "exceed", "exceeded", "exceeds",
           "improve", "improved", "improvement", "larger", "bigger", "greater",
           "surge", "surged", "climb", "climbed", "expand", "expanded", "expansion",
           "growing", "escalation", "escalate", "escalates", "overtake", "overtook", "outsell",
           "outsold"),
    "down": ("decrease", "decreased", "decreases", "decreasing", "decline", "declined",
             "declines", "declining", "fall", "fell", "fallen", "falling", "falls", "drop",
             "dropped", "drops", "lower", "less", "fewer", "below", "reduce", "reduced",
             "reduction", "shrink", "shrank", "worsen", "worsened", "smaller",
             "cut", "cuts", "loss", "losses", "lose", "lost", "contract", "contracted", "dip",
             "dipped", "slump", "slumped", "plunge", "plunged", "slid", "slide", "slipped"),
    "before": ("before", "prior", "earlier", "preceding", "previously", "until", "pre"),
    "after": ("after", "later", "following", "subsequent", "subsequently", "since", "post"),
    "long": ("longer", "longest"),
    "short": ("shorter", "shortest"),
    "early": ("earliest",),
    "late": ("latest",),
}  # fmt: skip
_ZH_COMPARISONS = {
    "max": ("最高", "最大", "最多", "最好", "最强", "最长", "最快", "首位", "之最", "最重"),
    "min": ("最低", "最小", "最少", "最差", "最弱", "最短", "最慢", "最轻"),
    "up": ("增加", "增长", "上升", "提高", "上涨", "高于", "超过", "多于", "增幅", "提升",
           "扩大", "涨", "升高", "更多", "更高", "盈利"),
    "down": ("减少", "下降", "降低", "下跌", "低于", "少于", "跌幅", "下滑", "缩小", "降",
             "更少", "更低", "亏损", "跌"),
    "before": ("之前", "以前", "此前", "早于", "提前"),
    "after": ("之后", "以后", "此后", "晚于", "延后"),
    "long": ("更长", "最长", "较长"),
    "short": ("更短", "最短", "较短"),
    "early": ("最早", "首班", "第一班", "首次", "首批"),
    "late": ("最晚", "最迟", "末班", "最后一班", "最后"),
}  # fmt: skip
# "比西城区早" (earlier than), "比去年多" (more than): the word after the compared thing.
_ZH_COMPARATIVE = re.compile(r"比[^，。？！?,]{1,12}?(早|晚|迟|多|少|高|低|长|短|大|小|快|慢)")
_ZH_COMPARATIVE_KINDS = {"早": "early", "晚": "late", "迟": "late", "多": "up", "少": "down",
                         "高": "up", "低": "down", "长": "long", "短": "short", "大": "up",
                         "小": "down", "快": "up", "慢": "down"}  # fmt: skip
# 前/后 after a verb or a noun: before or after it (调整前, 召回后); not in words that only
# contain them (目前 "now", 前往 "go to", 后果 "consequence").
_ZH_BEFORE_AFTER = re.compile(
    rf"(?<=[{_CJK_CHARS}])(前|后)(?![一二三四五六七八九十]|\d+(?:名|个|家|位|项|大|款))"
)
_ZH_NOT_BEFORE_AFTER = ("目前", "前往", "前景", "前台", "前进", "提前", "以前", "之前", "此前",
                        "后果", "后续", "然后", "最后", "以后", "之后", "此后", "后台", "落后",
                        "延后", "前三", "前五", "前十")  # fmt: skip

# ---- what is asked ----

# Words that narrow or widen what is asked: "for international applicants", "because of crew
# sickness", "overall", "both", 其中, 分别. One wording with such a word and the other without
# is most often a question about a part against one about the whole.
_EN_SCOPE = re.compile(
    r"\b(for|because|due|among|only|overall|total|all|both|including|excluding|except|each)\b"
)
_ZH_SCOPE = ("因为", "由于", "其中", "仅", "只", "全部", "总共", "分别", "合计", "各", "以及", "和")

# What kind of answer a question asks for, where its words say so: a reason is not a
# consequence, an amount not a time. "What"/"which" alone say nothing here.
_EN_INTENTS = (
    ("amount", re.compile(
        r"\bhow\s+(?:much|many|long|often|far|big|large|high|low)\b"
        r"|\bwhat\s+(?:percentage|share|proportion|amount|number)\b")),
    ("reason", re.compile(
        r"\bwhy\b|\bwhat\s+(?:caused|causes|led\s+to|made|drove|explains)\b"
        r"|\b(?:reasons?|causes?)\b")),
    ("effect", re.compile(
        r"\b(?:consequences?|effects?|impacts?|outcomes?|implications?)\b"
        r"|\bwhat\s+happened\s+(?:as\s+a\s+result|after)\b")),
    ("time", re.compile(r"\bwhen\b|\bwhat\s+(?:time|date|day)\b|\bhow\s+soon\b")),
    ("place", re.compile(r"\bwhere\b|\bwhich\s+(?:site|location|city|country|place)\b")),
    ("person", re.compile(r"\bwho(?:m|se)?\b")),
    ("manner", re.compile(
        r"\bhow\b(?!\s+(?:much|many|long|often|far|big|large|high|low|soon))|\bwhat\s+steps\b")),
)  # fmt: skip
_ZH_INTENTS = (
    ("amount", ("多少", "几个", "几家", "几次", "几天", "几成", "多大", "多高", "多长", "比例",
                "占比", "几")),
    ("reason", ("为什么", "为何", "原因", "怎么会", "因为什么", "缘故")),
    ("effect", ("影响", "后果", "结果如何", "导致了什么")),
    ("time", ("什么时候", "何时", "几点", "哪天", "哪一天", "时间")),
    ("place", ("哪里", "在哪", "何处", "什么地方", "地点")),
    ("person", ("谁", "哪位")),
    ("manner", ("怎么", "如何", "怎样", "办法", "措施")),
)  # fmt: skip

# ---- names ----


_WORD = re.compile(r"[^\W\d_](?:[\w'’\-]*\w)?|\d+(?:[.,]\d+)*%?|[$€£¥%]", re.UNICODE)
_LATIN_WORD = re.compile(r"[A-Za-z][A-Za-z0-9'’\-]*[A-Za-z0-9]|[A-Za-z]")
# ASCII boundaries, not \b: a Chinese character is a word character too (J7路, 批号2502A).
_IDENTIFIER = re.compile(
    r"(?<![A-Za-z0-9])(?=[A-Za-z0-9\-_.]*[A-Za-z])(?=[A-Za-z0-9\-_.]*\d)"
    r"[A-Za-z0-9][A-Za-z0-9\-_.]*[A-Za-z0-9](?![A-Za-z0-9])"
)
# Digits wherever they are (a Chinese run has no word boundary before them).
_NUMBER = re.compile(r"(?<![A-Za-z0-9.])\d+(?:[.,]\d+)*(%|％)?")
_QUOTED = re.compile(r"[\"“«「『《‘]([^\"”»」』》’]{1,60})[\"”»」』》’]")
_CJK = r"\u3400-\u4dbf\u4e00-\u9fff"
# A Chinese name is the two characters before a word for a place or an organisation (北田工厂,
# 华东区, 恒信银行); the document's own uses of those words give the question's names.
_ZH_NAMED = re.compile(
    rf"([{_CJK}]{{2}})(?=(?:公司|工厂|厂区|厂|集团|银行|大学|医院|学院|中心|研究所|研究院|"
    rf"省|市|县|区域|区|镇|村|站|号线|线路|港|机场|基地|园区|分公司|门店|店|品牌|事业部|部门|"
    rf"项目|车间|仓库|实验室|医药|科技|电子|汽车|地产|能源|物流|航空))"
)
# Provinces, municipalities and large cities: names with no mark around them (北京, 成都).
_ZH_PLACES = (
    "北京", "上海", "天津", "重庆", "广州", "深圳", "杭州", "南京", "苏州", "成都", "武汉",
    "西安", "长沙", "郑州", "青岛", "济南", "沈阳", "大连", "哈尔滨", "长春", "昆明", "贵阳",
    "南宁", "福州", "厦门", "合肥", "南昌", "太原", "石家庄", "呼和浩特", "兰州", "西宁",
    "银川", "乌鲁木齐", "拉萨", "海口", "三亚", "宁波", "无锡", "佛山", "东莞", "温州", "珠海",
    "香港", "澳门", "台北", "广东", "广西", "江苏", "浙江", "山东", "河南", "河北", "湖南",
    "湖北", "四川", "云南", "贵州", "福建", "安徽", "江西", "山西", "陕西", "甘肃", "青海",
    "辽宁", "吉林", "黑龙江", "海南", "台湾", "内蒙古", "宁夏", "新疆", "西藏",
)  # fmt: skip
_ZH_REGIONS = (
    "华东", "华南", "华北", "华中", "华西", "西南", "西北", "东北", "东南", "中南", "港澳",
    "海外", "境外", "国内", "北美", "欧洲", "亚太", "拉美", "中东", "非洲",
)  # fmt: skip
# Capitalised words that are not names: sentence openers and the words a title capitalises.
_NOT_NAMES = frozenset(
    """a an and are as at be but by can could did do does for from had has have how i if in
    into is it its may might must of on or our shall should so than that the their then there
    these they this those to under was we were what when where which who whom whose why will
    with would you your please list give tell summarize summarise describe explain compare
    according based all any each every other section table figure appendix chapter page note
    mr mrs ms dr""".split()
)
# Names of the Chinese bordering context that the two-character rule can catch by mistake.
# Period and quarter codes are periods, not names (Q3, H1, FY24).
_PERIOD_CODE = re.compile(r"^(?:q[1-4]|h[12]|fy\d*)$")
_ZH_NOT_NAMES = frozenset(("哪个", "哪家", "哪些", "什么", "这个", "那个", "各个", "所有",
                           "每个", "两个", "这家", "那家", "该", "本", "主要", "有限", "相关",
                           "其他", "全部", "多个", "本次", "此次", "重点", "核心", "新的",
                           "大型", "下属", "全国", "当地", "合作", "服务", "管理", "运营",
                           "交通", "技术", "生产", "销售"))  # fmt: skip


@dataclass(frozen=True, slots=True)
class Lexicon:
    """A document's names, in lower case: the words its text capitalises where a sentence
    does not start (more often than not), and its Chinese names."""

    names: frozenset[str]
    # Its words (stemmed, no function words) and Chinese character pairs: what a question
    # can name of it.
    vocabulary: frozenset[str] = frozenset()  # the salient ones (``SALIENT_MAX``)

    @classmethod
    def of(cls, text: str) -> Lexicon:
        capital: Counter[str] = Counter()
        lower: Counter[str] = Counter()
        for sentence in re.split(r"(?<=[.!?。！？\n])\s*", text):
            for i, m in enumerate(_LATIN_WORD.finditer(sentence)):
                w = m.group()
                key = w.lower()
                if w[0].isupper():
                    if i > 0 and key not in _NOT_NAMES:
                        capital[key] += 1
                else:
                    lower[key] += 1
        names = {
            w
            for w, n in capital.items()
            if n > lower[w]
            and len(w) > 1
            and w not in _MONTHS
            and w not in _UNITS
            and not _PERIOD_CODE.match(w)
        }
        names.update(
            m.group(1)
            for m in _ZH_NAMED.finditer(text)
            if not _ZH_FUNCTION_CHARS.intersection(m.group(1))
        )
        names.update(r for r in _ZH_REGIONS if r in text)
        uses = Counter(_term_list(text.lower()))
        rare = frozenset(t for t, n in uses.items() if n <= SALIENT_MAX)
        return cls(frozenset(n for n in names if n not in _ZH_NOT_NAMES), rare)


EMPTY_LEXICON = Lexicon(frozenset())

# Words that carry no subject of their own: what one wording has and another lacks among
# these says nothing about what is asked.
_FUNCTION_WORDS = frozenset(
    """a about above across after again against all also am an and any are around as ask at
    be been before being below between both but by can could did do does doing done down
    during each either else ever every few for from further get gets give given go going got
    had has have having here how however i if in into is it its just kind let like list made
    make many may me might more most much must my near need no nor not now of off on once one
    only or other our out over own part per please put quite rather really said same say see
    she should show since so some such summarise summarize tell than that the their them then
    there these they thing things this those though through to too under until up upon us
    use used very via was way we well were what whatever when where whether which while who
    whole whom whose why will with within without would yes yet you your overall total main
    describe explain detail details information briefly short summary overview exactly""".split()
)
_ZH_FUNCTION_CHARS = frozenset(
    "的了是在和与及或吗呢吧啊哪什么怎样如何为几多少有没个这那些其该所对从到由把被就都也还又很最"
)


def _stem(word: str) -> str:
    for suffix in ("ies", "es", "s", "ed", "ing", "ly"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            return word[: -len(suffix)]
    return word


# A word of the document is salient when the document uses it at most this often: a swap of
# two such words ("nausea" for "dizziness") changes what is asked; a swap of the document's
# everyday words ("plant" for "system") is more often a rewording.
SALIENT_MAX = 3


def _term_list(low: str) -> list[str]:
    """The words (stemmed) and Chinese character pairs of a lower-cased text, in order."""
    terms = [_stem(w) for w in re.findall(r"[a-z]{3,}", low) if w not in _FUNCTION_WORDS]
    for run in re.findall(rf"[{_CJK}]+", low):
        for i in range(len(run) - 1):
            pair = run[i : i + 2]
            if pair[0] not in _ZH_FUNCTION_CHARS and pair[1] not in _ZH_FUNCTION_CHARS:
                terms.append(pair)
    return terms


@dataclass(frozen=True, slots=True)
class QuestionFacts:
    """The facts two questions must share for one's answer to serve the other."""

    numbers: frozenset[str]
    units: frozenset[str]
    periods: frozenset[str]
    negated: bool
    comparisons: frozenset[str]
    names: frozenset[str]
    scope: frozenset[str] = frozenset()
    asks: frozenset[str] = frozenset()
    terms: frozenset[str] = frozenset()  # the question's words that its document has

    def signature(self) -> str:
        """A canonical string: equal facts, equal signatures."""
        parts = (
            ",".join(sorted(self.numbers)),
            ",".join(sorted(self.units)),
            ",".join(sorted(self.periods)),
            "neg" if self.negated else "",
            ",".join(sorted(self.comparisons)),
            ",".join(sorted(self.names)),
            ",".join(sorted(self.scope)),
            ",".join(sorted(self.asks)),
            ",".join(sorted(self.terms)),
        )
        return "|".join(parts)


def _number(text: str) -> str:
    if _THOUSANDS.match(text):
        text = text.replace(",", "")
    text = text.replace(",", ".")
    try:
        value = float(text)
    except ValueError:
        return text
    return str(int(value)) if value.is_integer() else repr(value)


def _zh_number(text: str) -> int | None:
    """A Chinese numeral below ten thousand (三, 十二, 二十五, 一百零五)."""
    total, current = 0, 0
    for ch in text:
        if ch in _ZH_DIGITS and ch != "十":
            current = _ZH_DIGITS[ch]
        elif ch == "十":
            total += (current or 1) * 10
            current = 0
        elif ch == "百":
            total += (current or 1) * 100
            current = 0
        elif ch == "千":
            total += (current or 1) * 1000
            current = 0
        else:
            return None
    return total + current


def question_facts(question: str, lexicon: Lexicon = EMPTY_LEXICON) -> QuestionFacts:
    """The facts of ``question``, read with the names of the document it is about."""
    text = question.strip()
    low = text.lower()
    numbers: set[str] = set()
    units: set[str] = set()
    periods: set[str] = set()
    comparisons: set[str] = set()
    names: set[str] = set()

    # Periods first: "Q3" and "first quarter" are periods, not a name and a number.
    # FY2025 is fiscal year 2025: the period "fiscal" and the number.
    masked = re.sub(r"\bfy\s*'?(\d{2,4})\b", r"fiscal \1", low)
    for pattern, form in _EN_PERIODS:
        for m in pattern.finditer(masked):
            periods.add(form.format(*(g.replace(".", "") for g in m.groups())))
        masked = pattern.sub(" ", masked)
    for m in _EN_ORDINAL_PERIOD.finditer(masked):
        n = {"first": 1, "second": 2, "third": 3, "fourth": 4}.get(m.group(1)) or int(m.group(1)[0])
        periods.add(("q" if m.group(2) == "quarter" else "h") + str(n))
    masked = _EN_ORDINAL_PERIOD.sub(" ", masked)
    for zh, form in _ZH_PERIODS:
        if zh in masked:
            periods.add(form)
            masked = masked.replace(zh, " ")
    for m in _ZH_QUARTER.finditer(masked):
        q = m.group(1)
        periods.add("q" + str(_ZH_DIGITS.get(q, q)))
    masked = _ZH_QUARTER.sub(" ", masked)
    for m in _ZH_WEEKDAY.finditer(masked):
        periods.add("weekday_" + m.group(1))
    masked = _ZH_WEEKDAY.sub(" ", masked)
    for m in _ZH_DATE_PART.finditer(masked):
        value = m.group(1)
        day = _number(value) if value.isdigit() else str(_zh_number(value))
        periods.add({"年": "y", "月": "mon", "日": "d", "号": "d"}[m.group(2)] + day)
    masked = _ZH_DATE_PART.sub(" ", masked)

    for m in _RATE.finditer(masked):
        units.add("per_" + m.group(1).replace("annum", "year"))
    masked = _RATE.sub(" ", masked)
    # Words (Latin script): months, weekdays, numbers, units, ordinals, comparisons.
    tokens = _WORD.findall(masked)
    previous_number = False
    for i, tok in enumerate(tokens):
        if tok in _MONTHS and (tok != "may" or _capitalised_in(text, "May")):
            periods.add(f"mon{_MONTHS[tok]}")
            previous_number = False
            continue
        if tok in _WEEKDAYS:
            periods.add(tok)
            continue
        if tok[0].isdigit():
            previous_number = True  # counted below, with the digits inside Chinese runs
            continue
        if tok in _EN_NUMBERS:
            numbers.add(_number(str(_EN_NUMBERS[tok])))
            previous_number = True
            continue
        after_number = previous_number or (i > 0 and tokens[i - 1] in ("in", "per"))
        if tok in _UNITS and (tok not in _UNIT_AFTER_NUMBER_ONLY or after_number):
            units.add(_UNITS[tok])
            previous_number = False
            continue
        if tok in _RATE_WORDS:
            units.add(_RATE_WORDS[tok])
        elif tok in _EN_ORDINALS and not (i + 1 < len(tokens) and tokens[i + 1] == "time"):
            numbers.add(f"#{_EN_ORDINALS[tok]}")  # "for the first time" counts nothing
        previous_number = False
    for m in _NUMBER.finditer(masked):
        if _inside_identifier(masked, m.start(), m.end()):
            continue
        numbers.add(_number(m.group().rstrip("%％")))
        if m.group(1):
            units.add("%")
    # A rate ("per square foot", 每股) is not the total.
    if (re.search(r"\bper\b", masked) or "每" in masked) and not units & _RATES:
        units.add("per")
    for sym in "$€£¥":
        if sym in masked:
            units.add(_UNITS[sym])

    # Chinese numerals and units.
    for m in _ZH_NUMERAL.finditer(masked):
        numeral = _zh_number(m.group(2))
        if numeral is not None:
            numbers.add(("#" if m.group(1) == "第" else "") + str(numeral))
    for m in _ZH_ORDINAL.finditer(masked):
        value = m.group(1)
        n2 = int(value) if value.isdigit() else _zh_number(value)
        if n2 is not None:
            numbers.add(f"#{n2}")
    rest = masked
    for zh, unit in _ZH_UNITS:
        if zh in rest:
            units.add(unit)
            rest = rest.replace(zh, " ")

    negated = bool(_EN_NEGATION.search(low)) or _zh_negated(text)

    words = set(re.findall(r"[a-z]+", low))  # "fastest-growing": fastest, growing
    for kind, forms in _EN_COMPARISONS.items():
        if words.intersection(forms):
            comparisons.add(kind)
    for kind, forms in _ZH_COMPARISONS.items():
        if any(f in text for f in forms):
            comparisons.add(kind)
    for m in _ZH_COMPARATIVE.finditer(text):
        comparisons.add(_ZH_COMPARATIVE_KINDS[m.group(1)])
    cleared = text
    for word in _ZH_NOT_BEFORE_AFTER:
        cleared = cleared.replace(word, "  ")
    for m in _ZH_BEFORE_AFTER.finditer(cleared):
        comparisons.add("before" if m.group(1) == "前" else "after")

    names.update(_names(text, lexicon))
    asks = {kind for kind, pattern in _EN_INTENTS if pattern.search(low)}
    asks.update(kind for kind, forms in _ZH_INTENTS if any(f in text for f in forms))
    if "amount" in asks or "reason" in asks or "time" in asks:
        asks.discard("manner")  # 怎么会 "how come" is a reason; "how long" an amount
    return QuestionFacts(
        numbers=frozenset(numbers),
        units=frozenset(units),
        periods=frozenset(periods),
        negated=negated,
        comparisons=frozenset(comparisons),
        names=frozenset(names),
        scope=frozenset({*_EN_SCOPE.findall(low), *(w for w in _ZH_SCOPE if w in text)}),
        asks=frozenset(asks),
        terms=frozenset(set(_term_list(masked)) & lexicon.vocabulary - _fact_words(names)),
    )


def _fact_words(names: set[str]) -> set[str]:
    """Names are compared as names, not again as words."""
    return {_stem(w) for n in names for w in re.findall(r"[a-z]+", n)}


def _inside_identifier(text: str, start: int, end: int) -> bool:
    """Digits that are part of an identifier (LX-K20, 2502A): the identifier is the fact."""
    before = text[start - 1] if start > 0 else ""
    after = text[end] if end < len(text) else ""
    return bool(re.match(r"[A-Za-z\-]", before) or re.match(r"[A-Za-z]", after))


def _capitalised_in(text: str, word: str) -> bool:
    return re.search(rf"(?<!^)(?<![.!?]\s)\b{word}\b", text) is not None


def _zh_negated(text: str) -> bool:
    cleared = text
    for word in _ZH_NOT_NEGATION:
        cleared = cleared.replace(word, "")
    return _ZH_NEGATION.search(cleared) is not None


def _names(text: str, lexicon: Lexicon) -> set[str]:
    names: set[str] = set()
    for m in _QUOTED.finditer(text):
        names.add(m.group(1).strip().lower())
    for m in _IDENTIFIER.finditer(text):
        if not _PERIOD_CODE.match(m.group().lower()):
            names.add(m.group().lower())
    for sentence in re.split(r"(?<=[.!?。！？])\s*", text):
        for i, m in enumerate(_LATIN_WORD.finditer(sentence)):
            w = m.group()
            key = w.lower()
            if _PERIOD_CODE.match(key):
                continue
            if key in lexicon.names or (
                i > 0
                and (w[0].isupper() or (len(w) > 1 and w.isupper()))
                and key not in _NOT_NAMES
                and key not in _MONTHS
                and key not in _UNITS
            ):
                names.add(key)
    for name in lexicon.names:
        if not name.isascii() and name in text:
            names.add(name)
    for r in (*_ZH_REGIONS, *_ZH_PLACES):
        if r in text:
            names.add(r)
    return names


# An amount, a time, a place or a person asked for in so many words ("how much", "when") is
# often asked for with "what" in the other wording ("what was the value", "what date"): those
# may stand against no stated kind. A reason, a consequence or a manner may not.
_SOFT_ASKS = frozenset(("amount", "time", "place", "person"))
_FIELDS = 9
_ASKS = 7
_TERMS = 8


def agree(a: str, b: str) -> bool:
    """Whether two signatures (``QuestionFacts.signature``) state the same facts: the same
    numbers, units, periods, negation, comparisons, names and scope words; kinds of answer
    that do not conflict; and no swap of the document's words (each wording naming something of the
    document the other does not: "nausea" for "dizziness", 门锁 for 机器人). One wording
    naming more than the other is no swap: paraphrases add words."""
    if a == b:
        return True
    fa, fb = a.split("|"), b.split("|")
    if len(fa) != _FIELDS or len(fb) != _FIELDS or fa[:_ASKS] != fb[:_ASKS]:
        return False
    asks_a = frozenset(filter(None, fa[_ASKS].split(",")))
    asks_b = frozenset(filter(None, fb[_ASKS].split(",")))
    if not asks_a:
        asks_ok = asks_b <= _SOFT_ASKS
    elif not asks_b:
        asks_ok = asks_a <= _SOFT_ASKS
    else:
        asks_ok = asks_a == asks_b
    if not asks_ok:
        return False
    terms_a = frozenset(filter(None, fa[_TERMS].split(",")))
    terms_b = frozenset(filter(None, fb[_TERMS].split(",")))
    return not (terms_a - terms_b and terms_b - terms_a)
