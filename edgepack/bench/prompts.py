"""The bench's prompts: grounded ones (the answer copies spans of the prompt) and open-ended ones."""
_EN_LONG = (
    "The lighthouse stood on a rock at the mouth of the harbour for more than two hundred years. Its keepers "
    "lived in a small stone house beside it, and each evening one of them climbed the narrow stairs to light "
    "the lamp. In the early years the lamp burned whale oil, which smoked and had to be trimmed every few hours "
    "through the night. Later it burned paraffin, and later still it was lit by electricity from a cable laid "
    "along the sea floor. Ships coming in from the west looked for its beam long before they could see the "
    "coast, and fishermen timed their return by it. During storms the keepers kept watch in turns, writing the "
    "wind, the height of the waves and every passing vessel into a thick logbook. When the light was finally "
    "automated, the last keeper locked the door, handed the key to the harbour master and moved to a cottage "
    "in the town, from which he could still see the beam sweep across the water every night.\n\n"
    "Summarize this story in a few sentences, then explain why lighthouses were automated.")


_ZH_LONG = (
    "灯塔矗立在港口入口的一块礁石上，已经两百多年了。守塔人住在旁边一间小石屋里，每天傍晚都有一个人爬上狭窄的楼梯去点灯。"
    "早年灯里烧的是鲸油，烟很大，夜里每隔几个小时就要修剪一次灯芯。后来改烧煤油，再后来用上了从海底电缆送来的电。"
    "从西边驶来的船只，远在看见海岸之前就开始寻找它的光束，渔民们也靠它来安排返航的时间。暴风雨的夜里，守塔人轮流值班，"
    "把风向、浪高和每一艘经过的船都记在一本厚厚的日志里。灯塔最终实现自动化之后，最后一位守塔人锁上门，把钥匙交给港务长，"
    "搬到了镇上的一间小屋，每天晚上他仍然能看见光束扫过海面。\n\n请用几句话概括这个故事，然后解释灯塔为什么会实现自动化。")
_EN_STORY, _ZH_STORY = _EN_LONG.split("\n\n")[0], _ZH_LONG.split("\n\n")[0]


def _code_sample():
    """A short function from CPython's own reference text (pydoc_data.topics, as edgepack.model.texts)."""
    import textwrap

    from pydoc_data.topics import topics

    text = topics.get("function", "")
    start = text.find("   def whats_on_the_telly")
    if start < 0:  # another CPython's topics: the first indented block with a def and a return
        import re

        m = next((m for t in topics.values() for m in re.finditer(r"\n((?:   [^\n]*\n){3,12})", t)
                  if "def " in m.group(1) and "return" in m.group(1)), None)
        return textwrap.dedent(m.group(1)) if m else "def add(a, b):\n    return a + b\n"
    end = text.find("\n\n", start)
    return textwrap.dedent(text[start:end]) + "\n"


PROMPTS = {  # name -> user message (the chat template is applied)
    "en-short": "Explain why the sky is blue.",
    "en-long": _EN_LONG,
    "zh-short": "请解释天空为什么是蓝色的。",
    "zh-long": _ZH_LONG,
    "en-rewrite": _EN_STORY + "\n\nRewrite the text above, word for word, but replace every \"keepers\" with \"guards\".",
    "en-extract": _EN_STORY + "\n\nQuote, word for word, the three sentences of the text above that say what the lamp burned.",
    "en-code": "Rename the parameter penguin to bird everywhere in this function and return the whole function:\n\n"
               + _code_sample(),
    "zh-rewrite": _ZH_STORY + "\n\n请逐字复述上面的文字，只把其中的“守塔人”都换成“看守”。",
    "zh-extract": _ZH_STORY + "\n\n请逐字引用上文中说明灯里烧什么的句子。",
}


OPEN_ENDED = ("en-short", "zh-short")  # every other prompt is grounded: its answer copies from the prompt
