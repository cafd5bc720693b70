"""Router metrics fed from state the request path keeps as plain counts."""

from moep_router.metrics import RouterMetrics
from moep_router.tokenize import TokenCache


def _lookups(metrics: RouterMetrics) -> dict[str, float]:
    text = metrics.render([]).decode()
    return {line.split('result="')[1].split('"')[0]: float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("moep_router_tokenize_cache_lookups_total{")}


def test_token_cache_lookups_are_counted_once_however_often_they_are_read():
    metrics, cache = RouterMetrics(), TokenCache(100)
    cache.get("a")
    cache.put("a", (1, 2))
    cache.get("a")
    cache.get("a")
    metrics.count_token_cache(cache)  # the health loop's round
    metrics.count_token_cache(cache)  # nothing new: nothing added
    assert _lookups(metrics) == {"hit": 2.0, "miss": 1.0}
    cache.get("b")
    metrics.render([], cache)  # a /metrics request reads it too
    assert _lookups(metrics) == {"hit": 2.0, "miss": 2.0}


def test_piece_tokenizer_checks_are_counted_once_and_its_state_shown(tiny_model):
    from moep_router.tokenize import RouterTokenizer

    metrics, tok = RouterMetrics(), RouterTokenizer(tiny_model)
    tok.pieces.check_every = 2

    def series() -> dict[str, float]:
        text = metrics.render([], None, tok.pieces).decode()
        return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
                for line in text.splitlines() if line.startswith("moep_router_piece_tokenizer")
                and "_created" not in line}

    for _ in range(4):
        tok.encode("the chef said that the meal was great")
    metrics.count_pieces(tok.pieces)  # the health loop's round, then /metrics: counted once
    assert series() == {'moep_router_piece_tokenizer_checks_total{result="same"}': 2.0,
                        'moep_router_piece_tokenizer_checks_total{result="different"}': 0.0,
                        "moep_router_piece_tokenizer_active": 1.0}
    tok.pieces._pieces[" chef"] = (0,)  # wrong ids: the next check finds them
    tok.encode("the chef said that the meal was great")
    tok.encode("the chef said that the meal was great")
    assert series() == {'moep_router_piece_tokenizer_checks_total{result="same"}': 2.0,
                        'moep_router_piece_tokenizer_checks_total{result="different"}': 1.0,
                        "moep_router_piece_tokenizer_active": 0.0}
