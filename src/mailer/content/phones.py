"""UK telephone numbers as people write them in text, and their ``tel:`` form (E.164).

One definition, used by the renderer (which links every number it finds in the text of
an issue) and by the checks (which point out a number it could not link). A number is
``0`` or ``+44`` followed by nine or ten more digits, spaced or hyphenated as people write
them ("0333 240 1727", "01228 606060", "+44 (0)7700 900123"), or the Childline number
"0800 1111". Digits that only continue something else are not a number: a match may not
touch a letter, a ``/``, ``.``, ``:``, ``=``, ``#`` or another group of digits, so the
numbers inside web addresses, dates ("2025-11-02"), meeting IDs ("326 836 067 140 9") and
course codes ("CSE-0123456789") are left alone.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

# Before a number: nothing that makes it part of a word, an address, a date or a longer
# run of digits ("067 140 9" inside a meeting ID).
_BEFORE = r"(?<![\w+/.:=#&%@-])(?<!\d\s)(?<!\d-)"
# After it: nothing that continues it.
_AFTER = r"(?![\w/@:-]|\.\d|\s\d)"
# A date written with dashes or slashes ("01-12-2025") is not a number.
_NOT_A_DATE = r"(?!\d{1,2}[-/.]\d{1,2}[-/.]\d{2,4})"
PHONE = re.compile(
    _BEFORE
    + _NOT_A_DATE
    + r"(?:\+44\s?(?:\(0\)\s?)?|0)(?:[1235789](?:[ -]?\d){8,9}|800[ -]?1111)"
    + _AFTER
)


def national_digits(number: str) -> str:
    """The digits after the 0 (or +44): ``3332401727`` for "0333 240 1727"."""
    digits = re.sub(r"\D", "", number.replace("(0)", ""))
    return digits[2:] if number.lstrip().startswith("+44") else digits[1:]


def tel_href(number: str) -> str:
    """The ``tel:`` link of a number, in E.164: ``tel:+443332401727``."""
    return f"tel:+44{national_digits(number)}"


def find(text: str) -> Iterator[re.Match[str]]:
    """Every UK telephone number written in ``text``."""
    return PHONE.finditer(text)
