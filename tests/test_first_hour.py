"""The traps a new user hits in the first hour, each tried the way a new user would hit it.

- A deployment name has a length limit.
"""

from __future__ import annotations

from tests.api_harness import ApiServer, deployment_body

EVENTS = [{"type": "user.message", "content": [{"type": "text", "text": "Say hello."}]}]
LOG_WAIT = 20.0


# --- names have a length limit -------------------------------------------------------------------


def test_a_deployment_name_is_at_most_256_characters(api_server: ApiServer) -> None:
    http = api_server.http()
    longest = http.post("/v1/deployments", json=deployment_body(name="n" * 256))
    assert longest.status_code == 200, longest.text
    too_long = http.post("/v1/deployments", json=deployment_body(name="n" * 10_000))
    assert too_long.status_code == 400
    assert too_long.json()["error"]["message"] == "name: at most 256 characters, got 10000"
    renamed = http.post(f"/v1/deployments/{longest.json()['id']}", json={"name": "é" * 257})
    assert renamed.status_code == 400
    assert renamed.json()["error"]["message"] == "name: at most 256 characters, got 257"
