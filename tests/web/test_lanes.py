"""web/lanes.py: the API's case views and searches run at most READ_THREADS at a time per process, the rest
waiting on the event loop; a download is not held behind them (the app in process, real SQLite index)."""

from __future__ import annotations

import threading
import time

from portal_data import CASE_A
from storage import access

from test_events import served  # noqa: F401 - a fixture


def test_case_views_beyond_the_read_lane_wait_and_a_download_passes_them(served, monkeypatch):
    client, _settings, pdfa = served
    client.app.state.read_lane.total_tokens = 1  # the lane was made by the app's lifespan, on its loop
    release, inside, peak, lock = threading.Event(), [0], [0], threading.Lock()
    real_case = access.Gate.case

    def slow_case(gate, case_id):
        with lock:
            inside[0] += 1
            peak[0] = max(peak[0], inside[0])
        try:
            release.wait(10)
            return real_case(gate, case_id)
        finally:
            with lock:
                inside[0] -= 1

    monkeypatch.setattr(access.Gate, "case", slow_case)
    answers: list[int] = []
    views = [threading.Thread(target=lambda: answers.append(client.get(f"/api/v1/cases/{CASE_A}").status_code))
             for _ in range(3)]
    for view in views:
        view.start()
    deadline = time.monotonic() + 10
    while inside[0] < 1:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    try:
        download = client.get(f"/api/v1/cases/{CASE_A}/documents/1/pdfa")  # while the views hold the lane
        assert download.status_code == 200 and download.content == pdfa
        time.sleep(0.2)
        assert peak[0] == 1 and len(answers) == 0  # one view in a thread, two waiting (the old code ran all 3)
    finally:
        release.set()
        for view in views:
            view.join(20)
    assert answers == [200, 200, 200] and peak[0] == 1
