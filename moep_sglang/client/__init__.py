"""Client SDK for moep-router (and SGLang workers directly, over HTTP).

    from moep_sglang.client import Client
    with Client("http://127.0.0.1:8000") as c:
        r = c.score("Is the hotel good? Answer:", [" yes"], label_token_ids=[661, 362])
"""

from moep_sglang.client.async_client import AsyncClient
from moep_sglang.client.sync_client import Client
from moep_sglang.client.types import (
    ChatResult, Classification, ClassifyResult, CompletionResult, GenerateResult, MoepError,
    RerankHit, RerankResult, ScoreResult, Usage,
)

__all__ = ["AsyncClient", "Client", "MoepError", "ScoreResult", "ClassifyResult",
           "Classification", "RerankResult", "RerankHit", "GenerateResult", "CompletionResult",
           "ChatResult", "Usage"]
