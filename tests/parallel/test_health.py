"""A lost rank: the survivors stop, non-zero, naming it, instead of hanging in a collective."""

from tests.parallel.launch import launch
from trillion.parallel import EXIT_RANK_LOST


def test_survivors_of_a_killed_rank_exit_naming_it(tmp_path):
    # rank 1 exits abruptly (os._exit) as the forward starts; the watchdog grace is 5 s. The launch
    # timeout only guards against a hang: a survivor still running after it fails the test.
    exits = launch(3, "lost", str(tmp_path), timeout=150)
    assert exits[1].code == 9
    for e in (exits[0], exits[2]):
        assert e.code == EXIT_RANK_LOST, (e.code, e.output[-2000:])
        assert f"trillion rank {e.rank}: rank 1 of 3 stopped responding (no heartbeat for 5 s)" in e.output, e.output[-2000:]
        assert "finished the forward" not in e.output
