"""Recent documents' encodings, remembered by digest: Estimate, then Analyze or Stream of the
same document (with any model, chunk size or question) tokenizes it once.

Tokenizing is most of the planning of a long document (about 0.27 s of the 0.3 s for a
1M-token one on one core here), and it happens before the first model call can start. What is
kept is what planning needs: the byte length of each token (``chunker.token_lengths``), one
byte a token, so a 1M-token document costs 1 MB here; never the text. Bounded by count, the
oldest going first. Thread-safe: long documents are planned in worker threads.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Sequence

from longread_server.memo import Memo
from longread_server.plan.chunker import token_lengths
from longread_server.plan.tokenizers import Tokenizer


class EncodingMemo:
    def __init__(self, size: int = 8) -> None:
        self._memo: Memo[bytes, Sequence[int]] = Memo(size)
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._memo)

    def token_lengths(self, tokenizer: Tokenizer, text: str) -> Sequence[int]:
        """``token_lengths(tokenizer, tokenizer.encode(text))``, remembered."""
        digest = hashlib.blake2b(tokenizer.encoding_name.encode(), digest_size=16)
        digest.update(text.encode("utf-8", "surrogatepass"))
        key = digest.digest()
        with self._lock:
            found = self._memo.get(key)
            if found is not None:
                self.hits += 1
                return found
            self.misses += 1
        # Outside the lock: two long documents are tokenized at once on two cores.
        lens = token_lengths(tokenizer, tokenizer.encode(text))
        with self._lock:
            self._memo.get_or_make(key, lambda: lens)
        return lens
