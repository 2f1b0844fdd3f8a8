"""A context recorder keeps what is noted inside a recording, and nothing outside one."""

from fog_shared.recorder import ContextRecorder


def test_notes_go_to_the_innermost_recording_and_nowhere_outside_one() -> None:
    recorder = ContextRecorder[int]("test")
    recorder.note([1])  # no recording: dropped
    with recorder.recording() as outer:
        recorder.note([2])
        with recorder.recording() as inner:
            recorder.note(n for n in (3, 4))
        recorder.note([5])
    recorder.note([6])
    assert (outer, inner) == ([2, 5], [3, 4])
