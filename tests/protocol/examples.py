"""Every example message of reference/original-protocol.md §2, as wire text.

Verbatim where the reference gives a complete example; where it elides (``[...]``) or only lists
the fields in a table, the example is completed from that table and marked ``# completed``.
Placeholders such as ``"<base64>"`` and ``".."`` are kept: they are strings like any other.
"""

from __future__ import annotations

from typing import Literal

Socket = Literal["client", "node"]

# (name, socket that parses it, wire text)
EXAMPLES: list[tuple[str, Socket, str]] = [
    # -- §2.2 node -> scheduler --
    (
        "node_register",
        "node",
        """{"type":"node_register","node_id":null,"version":"2.0.0","capability_schema_version":"2.0","platform":"windows",
 "hardware":{"cpu_cores":16,"memory_gb":32,"gpus":[{"name":"RTX 4090","memory_gb":24}]},
 "installed_models":[],"installed_services":[{"service_id":"faster-whisper-vad","type":"asr","device":"gpu","status":"running"}],
 "capability_by_type":[{"type":"asr","ready":true}],"features_supported":{},"accept_public_jobs":true,
 "language_capabilities":{"asr_languages":["en","zh"],"semantic_languages":["en","zh"],"tts_languages":["en","zh"],"semantic_core_ready":true}}""",
    ),
    (
        # completed: the reference elides installed_services / capability_by_type as [...]
        "node_heartbeat",
        "node",
        """{"type":"node_heartbeat","node_id":"node-3F2A9C1B","timestamp":1767225600000,
 "resource_usage":{"cpu_percent":12.5,"gpu_percent":40.0,"mem_percent":55.1,"running_jobs":1,"gpu_queue_length":2},
 "installed_services":[{"service_id":"faster-whisper-vad","type":"asr","device":"gpu","status":"running"}],
 "capability_by_type":[{"type":"asr","ready":true}],
 "language_capabilities":{"asr_languages":["en","zh"],"semantic_languages":["en","zh"],"tts_languages":["en","zh"]},
 "processing_metrics":{"serviceEfficiencies":{"faster-whisper-vad":8.2}}}""",
    ),
    (
        "job_result",
        "node",
        """{"type":"job_result","job_id":"job-7c0e...","attempt_id":1,"node_id":"node-3F2A9C1B","session_id":"s-1A2B3C4D",
 "utterance_index":3,"success":true,"text_asr":"你好","text_translated":"Hello","tts_audio":"<base64>","tts_format":"opus",
 "extra":{"language_probability":0.98},"processing_time_ms":1840,"trace_id":"0b7e...",
 "asr_quality_level":"good","reason_codes":[],"quality_score":0.91,"rerun_count":0,
 "segments_meta":{"count":2,"max_gap":0.4,"avg_duration":1.6}}""",
    ),
    (
        # completed: the failure form with its elided required fields
        "job_result_failure",
        "node",
        """{"type":"job_result","job_id":"job-7c0e...","attempt_id":1,"node_id":"node-3F2A9C1B","session_id":"s-1A2B3C4D",
 "utterance_index":3,"success":false,"processing_time_ms":12,
 "error":{"code":"PROCESSING_ERROR","message":"DUPLICATE_UTTERANCE_INDEX: ..."},"trace_id":"0b7e..."}""",
    ),
    (
        # completed: the model failure form
        "job_result_model_failure",
        "node",
        """{"type":"job_result","job_id":"job-7c0e...","attempt_id":1,"node_id":"node-3F2A9C1B","session_id":"s-1A2B3C4D",
 "utterance_index":3,"success":false,"error":{"code":"MODEL_NOT_AVAILABLE","message":"model missing",
 "details":{"service_id":"nmt-m2m100","service_version":"1.0","reason":"not installed"}},"trace_id":"0b7e..."}""",
    ),
    (
        # completed: an empty acknowledgement (§2.2)
        "job_result_empty_ack",
        "node",
        """{"type":"job_result","job_id":"job-1","attempt_id":1,"node_id":"node-3F2A9C1B","session_id":"s-1A2B3C4D",
 "utterance_index":2,"success":true,"text_asr":"","extra":{"reason":"NO_TEXT_ASSIGNED"},"trace_id":".."}""",
    ),
    (
        "node_asr_partial",
        "node",
        """{"type":"asr_partial","job_id":"job-..","node_id":"node-..","session_id":"s-..","utterance_index":3,"text":"你好","is_final":false,"trace_id":".."}""",
    ),
    (
        "job_ack",
        "node",
        """{"type":"job_ack","job_id":"job-..","attempt_id":1,"node_id":"node-..","session_id":"s-..","trace_id":".."}""",
    ),
    (
        "job_started",
        "node",
        """{"type":"job_started","job_id":"job-..","attempt_id":1,"node_id":"node-..","session_id":"s-..","trace_id":".."}""",
    ),
    (
        "node_error",
        "node",
        """{"type":"node_error","node_id":"..","code":"..","message":"..","details":{}}""",
    ),
    # -- §2.3 scheduler -> node --
    (
        "node_register_ack",
        "node",
        """{"type":"node_register_ack","node_id":"node-3F2A9C1B","message":"Node registered successfully","status":"registering"}""",
    ),
    (
        "job_assign",
        "node",
        """{"type":"job_assign","job_id":"job-7c0e8f2a-...","attempt_id":1,"session_id":"s-1A2B3C4D","utterance_index":3,
 "src_lang":"zh","tgt_lang":"en","features":{},
 "pipeline":{"use_asr":true,"use_nmt":true,"use_tts":true,"use_semantic":false,"use_tone":false},
 "audio":"<base64>","audio_format":"opus","sample_rate":16000,"mode":"one_way",
 "enable_streaming_asr":true,"partial_update_interval_ms":1000,"trace_id":"0b7e...",
 "padding_ms":220,"is_timeout_triggered":true,"turn_id":"5d1c..."}""",
    ),
    (
        "job_cancel",
        "node",
        """{"type":"job_cancel","job_id":"job-..","trace_id":"..","reason":"job_timeout"}""",
    ),
    # -- §2.4 client -> scheduler --
    (
        "session_init",
        "client",
        """{"type":"session_init","client_version":"web-client-v1.0","platform":"web","src_lang":"zh","tgt_lang":"en","dialect":null,
 "features":{},"pairing_code":null,"mode":"one_way","trace_id":"9f1d...","tenant_id":null}""",
    ),
    (
        "session_init_two_way",
        "client",
        """{"type":"session_init","client_version":"web-client-v1.0","platform":"web","src_lang":"auto","tgt_lang":"en","dialect":null,
 "features":{},"pairing_code":null,"mode":"two_way_auto","lang_a":"zh","lang_b":"en","auto_langs":["zh","en"],"trace_id":"..","tenant_id":null}""",
    ),
    (
        "audio_chunk",
        "client",
        """{"type":"audio_chunk","session_id":"s-1A2B3C4D","seq":17,"is_final":false,"payload":"<base64 Plan-A opus>"}""",
    ),
    (
        "audio_chunk_final",
        "client",
        """{"type":"audio_chunk","session_id":"s-1A2B3C4D","seq":18,"is_final":true,"payload":""}""",
    ),
    (
        "client_heartbeat",
        "client",
        """{"type":"client_heartbeat","session_id":"s-1A2B3C4D","timestamp":1767225600000}""",
    ),
    (
        "tts_started",
        "client",
        """{"type":"tts_started","session_id":"s-1A2B3C4D","trace_id":"..","group_id":"group_s-1A2B3C4D_1767225601234","ts_start_ms":1767225602000}""",
    ),
    (
        "tts_play_ended",
        "client",
        """{"type":"tts_play_ended","session_id":"s-1A2B3C4D","trace_id":"..","group_id":"group_s-1A2B3C4D_1767225601234","ts_end_ms":1767225604500}""",
    ),
    ("room_create", "client", """{"type":"room_create","client_ts":1767225600000}"""),
    (
        "room_join",
        "client",
        """{"type":"room_join","room_code":"482913","display_name":"Bob"}""",
    ),
    (
        "webrtc_offer",
        "client",
        """{"type":"webrtc_offer","room_code":"482913","to":"s-9C8B7A6D","sdp":{"type":"offer","sdp":"v=0..."}}""",
    ),
    (
        "utterance",
        "client",
        """{"type":"utterance","session_id":"s-..","utterance_index":0,"manual_cut":true,"src_lang":"zh","tgt_lang":"en","dialect":null,
 "audio":"<base64>","audio_format":"opus","sample_rate":16000,"trace_id":".."}""",
    ),
    # completed from the §2.4 table
    (
        "session_close",
        "client",
        """{"type":"session_close","session_id":"s-1A2B3C4D","reason":"user"}""",
    ),
    ("room_leave", "client", """{"type":"room_leave","room_code":"482913"}"""),
    (
        "room_raw_voice_preference",
        "client",
        """{"type":"room_raw_voice_preference","room_code":"482913","target_session_id":"s-9C8B7A6D","receive_raw_voice":false}""",
    ),
    (
        "webrtc_answer",
        "client",
        """{"type":"webrtc_answer","room_code":"482913","to":"s-9C8B7A6D","sdp":{"type":"answer","sdp":"v=0..."}}""",
    ),
    (
        "webrtc_ice",
        "client",
        """{"type":"webrtc_ice","room_code":"482913","to":"s-9C8B7A6D","candidate":{"candidate":"candidate:1 1 udp 1 10.0.0.1 9 typ host","sdpMid":"0"}}""",
    ),
    # -- §2.5 scheduler -> client --
    (
        "session_init_ack",
        "client",
        """{"type":"session_init_ack","session_id":"s-1A2B3C4D","message":"session created","trace_id":"9f1d...",
 "protocol_version":"1.0","use_binary_frame":false,"negotiated_codec":"opus","negotiated_audio_format":"opus",
 "negotiated_sample_rate":16000,"negotiated_channel_count":1}""",
    ),
    (
        "translation_result",
        "client",
        """{"type":"translation_result","session_id":"s-1A2B3C4D","utterance_index":3,"job_id":"job-7c0e...",
 "text_asr":"你好","text_translated":"Hello","tts_audio":"<base64>","tts_format":"opus","extra":{"language_probability":0.98},
 "trace_id":"0b7e...","group_id":"group_s-1A2B3C4D_1767225601234","part_index":0,"service_timings":{"total_ms":1840},
 "scheduler_sent_at_ms":1767225603000,"asr_quality_level":"good","reason_codes":[],"quality_score":0.91,"rerun_count":0,
 "segments_meta":{"count":2,"max_gap":0.4,"avg_duration":1.6}}""",
    ),
    (
        "asr_partial",
        "client",
        """{"type":"asr_partial","session_id":"s-..","utterance_index":3,"job_id":"","text":"你","is_final":false,"trace_id":".."}""",
    ),
    (
        "missing_result",
        "client",
        """{"type":"missing_result","session_id":"s-..","utterance_index":3,"reason":"silence_detected","created_at_ms":1767225603000,"trace_id":".."}""",
    ),
    (
        "ui_event",
        "client",
        """{"type":"ui_event","trace_id":"0b7e..","session_id":"s-..","job_id":"job-..","utterance_index":3,"event":"DISPATCHED","status":"ok"}""",
    ),
    (
        "ui_event_error",
        "client",
        """{"type":"ui_event","trace_id":"..","session_id":"s-..","job_id":"job-..","utterance_index":3,"event":"ERROR","status":"error",
 "error_code":"NODE_UNAVAILABLE","hint":"发生错误，请稍后重试。"}""",
    ),
    (
        "error",
        "client",
        """{"type":"error","code":"INVALID_MESSAGE","message":"Invalid message format: missing field `seq` at line 1 column 40"}""",
    ),
    (
        "server_heartbeat",
        "client",
        """{"type":"server_heartbeat","session_id":"s-..","timestamp":1767225600123}""",
    ),
    ("session_close_ack", "client", """{"type":"session_close_ack","session_id":"s-.."}"""),
    # completed from the §2.5 room / WebRTC list
    (
        "room_create_ack",
        "client",
        """{"type":"room_create_ack","room_code":"482913","room_id":"7d0c1c4e-0000-4000-8000-000000000000"}""",
    ),
    (
        "room_members",
        "client",
        """{"type":"room_members","room_code":"482913","members":[{"participant_id":"s-1A2B3C4D","session_id":"s-1A2B3C4D",
 "display_name":"Bob","preferred_lang":"en","raw_voice_preferences":{"s-9C8B7A6D":false},"joined_at":"2026-01-01T00:00:00.123456Z"}]}""",
    ),
    (
        "room_error",
        "client",
        """{"type":"room_error","code":"ROOM_NOT_FOUND","message":"no such room"}""",
    ),
    (
        "room_expired",
        "client",
        """{"type":"room_expired","room_code":"482913","message":"30分钟无人发言，房间已过期"}""",
    ),
]

# Fields in an example that the original drops on re-serialization too (unknown to its types).
DROPPED: dict[str, list[tuple[str, ...]]] = {
    "node_heartbeat": [("resource_usage", "gpu_queue_length")],
}
