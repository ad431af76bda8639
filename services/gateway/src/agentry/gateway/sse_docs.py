"""How the two event streams are documented in OpenAPI: frames, event types, resuming, 204."""

from __future__ import annotations

from typing import Any

EVENT_SCHEMA_PREFIX = "RunEvent"  # components/schemas/RunEvent<type>, filled in by openapi.py

RUN_LAST_EVENT_ID = (
    "Resume after this event: the `id` of the last frame received (a sequence number, 0 or more). "
    "A number within the run: the events after it. A number the run has not reached yet (a live run): "
    "the stream waits for events numbered above it, and when the run ends its terminal `run_finished` "
    "event is sent all the same (under its own, lower id) and the stream ends. A number at or past the "
    "end of a finished run: 204 (an EventSource stops reconnecting). Anything else (not a decimal "
    "integer, negative, above 2^63-1): 422 `invalid_last_event_id`."
)
THREAD_LAST_EVENT_ID = (
    "Resume after this event: `<thread_seq>.<seq>`, the `id` of the last frame received. A place that "
    "names no run of this thread: 422 `invalid_last_event_id`; not of that form: 422 as well. Resuming "
    "past the end of a run's events sends that run's terminal event again (unless it is the very event "
    "named) and goes on with the thread's next run."
)

_FRAMES = (
    "Server-sent events (`text/event-stream`). The first frame is `retry: 1000`. Each event is one frame: "
    "`id: {id}` then `data: {json}` (one line) and a blank line. The JSON object has `type` (one of the "
    "`RunEvent…` schemas) and `seq` (its number in the run). A line `: keep-alive` is sent when the run "
    "is quiet. Open it with a header credential or, from a browser's EventSource, with "
    "`?access_token=` holding a stream token (POST …/stream-token)."
)


def _stream_answer(description: str, id_description: str) -> dict[str, Any]:
    return {
        "description": f"{_FRAMES} {description}",
        "content": {
            "text/event-stream": {
                "schema": {"type": "string", "description": "The frames as they are sent."},
                # OpenAPI 3.2's way of describing each event of a stream; 3.1 tools show `schema`.
                "itemSchema": {
                    "type": "object",
                    "required": ["id", "data"],
                    "properties": {
                        "id": {"type": "string", "description": id_description},
                        "data": {
                            "type": "string",
                            "contentMediaType": "application/json",
                            "contentSchema": {"$ref": f"#/components/schemas/{EVENT_SCHEMA_PREFIX}"},
                        },
                    },
                },
                "example": 'retry: 1000\n\nid: 1\ndata: {"seq":1,"run_id":"…","thread_id":"…","model":"gpt-4o-mini",'
                '"type":"run_started"}\n\nid: 2\ndata: {"seq":2,"text":"Hello","type":"text_delta"}\n\n'
                'id: 3\ndata: {"seq":3,"reason":"completed","error":null,"type":"run_finished"}\n\n',
            }
        },
    }


RUN_STREAM_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: _stream_answer(
        "The stream ends after the `run_finished` event.",
        "The event's sequence number in the run (send it back as `Last-Event-ID`).",
    ),
    204: {"description": "`Last-Event-ID` is at or past the end of a finished run: nothing more will come."},
}
THREAD_STREAM_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: _stream_answer(
        "Every run of the thread, one after the other, runs started later included; the "
        "stream never ends by itself. Each event also carries its `run_id`.",
        "`<thread_seq>.<seq>`: the run's place on the thread, the event's number in the run.",
    ),
}
STREAM_EXTRA: dict[str, Any] = {
    "parameters": [
        {
            "name": "access_token",
            "in": "query",
            "required": False,
            "description": "A stream token for this very stream (EventSource cannot send headers); "
            "never an access token or API key.",
            "schema": {"type": "string", "maxLength": 8192},
        }
    ],
}
