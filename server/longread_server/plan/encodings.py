"""Recent documents' encodings, remembered by digest: Estimate, then Analyze or Stream of the
same document (with any model, chunk size or question) tokenizes it once.

Tokenizing is most of the planning of a long document, and it happens before the first model
call can start. What is kept is what planning needs: the byte length of each token
(``chunker.token_lengths``), one byte a token, never the text.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from longread_server.memo import Memo
from longread_server.plan.chunker import text_token_lengths
from longread_server.plan.tokenizers import Tokenizer, TooManyTokens


class EncodingMemo:
    def __init__(self, size: int = 8) -> None:
        self._memo: Memo[bytes, Sequence[int]] = Memo(size)

    def __len__(self) -> int:
        return len(self._memo)

    @property
    def hits(self) -> int:
        return self._memo.hits

    @property
    def misses(self) -> int:
        return self._memo.misses

    def token_lengths(self, tokenizer: Tokenizer, text: str, limit: int) -> Sequence[int]:
        """``text_token_lengths(tokenizer, text, limit)``, remembered by
        the text's digest (documents of one encoding share an entry, whatever the model's
        name). Raises ``TooManyTokens`` (and remembers nothing) over ``limit``; a document
        remembered under a larger limit is checked against this one."""
        digest = hashlib.blake2b(tokenizer.encoding_name.encode(), digest_size=16)
        digest.update(text.encode("utf-8", "surrogatepass"))
        lens = self._memo.get_or_make(
            digest.digest(),
            lambda: text_token_lengths(tokenizer, text, limit),
        )
        if len(lens) > limit:
            raise TooManyTokens(limit)
        return lens
