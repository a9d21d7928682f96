"""``# corral: shared-ok <reason>``: a finding that a person has looked at and accepted.

The comment accepts the findings reported on its own line, and only with a reason: an
accepted leak should tell the next reader why it is safe. A bare ``# corral: shared-ok`` does
not accept anything; the finding stays and says that a reason is missing.
"""

from __future__ import annotations

import io
import re
import tokenize

_MARK = re.compile(r"corral:\s*shared-ok\b(?P<rest>[^#]*)")
_REASON = re.compile(r"\w")


def acceptances(source: str) -> dict[int, bool]:
    """Line number → whether the ``shared-ok`` comment on that line gives a reason.

    Reads comments with :mod:`tokenize`, so the marker inside a string is not a comment.
    Source that does not tokenize (it parsed, so this is rare) accepts nothing.
    """
    found: dict[int, bool] = {}
    try:
        for token in tokenize.generate_tokens(io.StringIO(source).readline):
            if token.type == tokenize.COMMENT:
                match = _MARK.search(token.string)
                if match is not None:
                    found[token.start[0]] = bool(_REASON.search(match.group("rest")))
    except (tokenize.TokenError, SyntaxError):
        return {}
    return found


MISSING_REASON = (
    "; the `# corral: shared-ok` comment on this line accepts it only with a reason after it"
)
