"""Words typed with the wrong keyboard layout: "gjlndthlf" typed on a Latin (QWERTY) keyboard
by someone who meant the Russian (ЙЦУКЕН) "подтверждаю", or "yjn" for "нет"; and the other way
round, "нуы" for "yes".

Only the conversion lives here; whether the converted text means anything is for the caller to
decide against the words it knows (a yes/no word, a button, a command), so a Latin address is
never turned into Cyrillic nonsense.
"""

from __future__ import annotations

import re

__all__ = ["other_layout"]

# The same keys, in the same order, on a US QWERTY and a Russian ЙЦУКЕН keyboard.
_LATIN = "`qwertyuiop[]asdfghjkl;'zxcvbnm,./" + '~QWERTYUIOP{}ASDFGHJKL:"ZXCVBNM<>?'
_CYRILLIC = "ёйцукенгшщзхъфывапролджэячсмитьбю." + "ЁЙЦУКЕНГШЩЗХЪФЫВАПРОЛДЖЭЯЧСМИТЬБЮ,"
_TO_CYRILLIC = str.maketrans(_LATIN, _CYRILLIC)
_TO_LATIN = str.maketrans(_CYRILLIC, _LATIN)
_LATIN_LETTER = re.compile("[A-Za-z]")
_CYRILLIC_LETTER = re.compile("[\u0400-\u04ff]")


def other_layout(text: str) -> str | None:
    """``text`` as the same keys give it in the other layout, or None when the text mixes
    Latin and Cyrillic letters or has none (then it was not typed in one wrong layout)."""
    latin = _LATIN_LETTER.search(text) is not None
    cyrillic = _CYRILLIC_LETTER.search(text) is not None
    if latin == cyrillic:
        return None
    return text.translate(_TO_CYRILLIC if latin else _TO_LATIN)
