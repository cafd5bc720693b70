import math

import pytest

from moep_router.config import WorkerSpec, parse_router_args


def test_worker_spec_options():
    s = WorkerSpec.parse("http://127.0.0.1:30000,kv=tcp://127.0.0.1:5557,threshold=2e12")
    assert s.url == "http://127.0.0.1:30000" and s.kv_endpoint == "tcp://127.0.0.1:5557"
    assert s.replay_endpoint == "tcp://127.0.0.1:5558" and s.threshold_flops == 2e12
    with pytest.raises(ValueError, match="unknown option"):
        WorkerSpec.parse("http://h:1,colour=red")
    with pytest.raises(ValueError, match="expected http"):
        WorkerSpec.parse("h:1")
    for text in ("http://h:1", "http://h:1,kv=tcp://h:5,replay=tcp://h:9,threshold=1e+12"):
        assert WorkerSpec.parse(WorkerSpec.parse(text).to_text()) == WorkerSpec.parse(text)


def test_cli_and_workers_file(tiny_model, tmp_path):
    f = tmp_path / "workers.txt"
    f.write_text("# the GPU box\nhttp://10.0.0.2:30000,kv=tcp://10.0.0.2:5557\n\n")
    c = parse_router_args(["--model-path", str(tiny_model), "--worker", "http://h:1",
                           "--workers-file", str(f), "--policy", "cache_aware"])
    assert [w.url for w in c.workers] == ["http://h:1", "http://10.0.0.2:30000"]
    assert c.policy == "cache_aware" and c.threshold_flops == math.inf


@pytest.mark.parametrize("argv,message", [
    (["--policy", "magic"], "--policy"),
    (["--threshold-flops", "0"], "--threshold-flops"),
    (["--worker", "h:1"], "expected http"),
    (["--processes", "0"], "--processes"),
    (["--chat-template", "/nonexistent/t.jinja"], "--chat-template"),
])
def test_bad_flags_name_the_flag(tiny_model, capsys, argv, message):
    with pytest.raises(SystemExit):
        parse_router_args(["--model-path", str(tiny_model), *argv])
    assert message in capsys.readouterr().err


def test_model_path_must_hold_a_tokenizer(tmp_path, capsys):
    with pytest.raises(SystemExit):
        parse_router_args(["--model-path", str(tmp_path)])
    assert "tokenizer.json" in capsys.readouterr().err
