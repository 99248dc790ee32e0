#!/usr/bin/env python3
"""Writes the smuggling cases of proxy/tests/smuggling.rs (and the RFC 9112 strictness cases of
http1) as seeds for the `http1_parser` fuzz target, in its record format: `[op][len][bytes]`,
op 0 = request bytes, op 1 = response bytes, at most 255 bytes a record.

Run from the repository root: python3 fuzz/seed_http1.py (writes fuzz/corpus/http1_parser/).
"""
import os

S = "GET /smuggled HTTP/1.1\r\nHost: h\r\n\r\n"
CHUNK = f"{len(S):x}\r\n{S}\r\n0\r\n\r\n"
OK = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"

CASES = {
    "cl_te": f"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{S}",
    "te_cl": f"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n{CHUNK}",
    "te_xchunked": f"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: xchunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n{S}",
    "te_chunked_identity": f"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n{S}",
    "te_case": f"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: CHUNKED\r\nContent-Length: 5\r\n\r\n{CHUNK}",
    "te_tab": f"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding:\tchunked\r\nContent-Length: 5\r\n\r\n{CHUNK}",
    "te_obs_fold": f"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding:\r\n chunked\r\nContent-Length: 5\r\n\r\n{CHUNK}",
    "te_space_colon": f"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding : chunked\r\nContent-Length: 5\r\n\r\n{CHUNK}",
    "te_twice": f"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n{CHUNK}",
    "cl_duplicate": f"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nContent-Length: {5 + len(S)}\r\n\r\nhello{S}",
    "cl_list": f"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5, {5 + len(S)}\r\n\r\nhello{S}",
    "cl_plus": f"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: +5\r\n\r\nhello{S}",
    "cl_minus": f"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: -1\r\n\r\n{S}",
    "cl_overflow": f"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 18446744073709551621\r\n\r\nhello{S}",
    "bare_lf_head": f"POST / HTTP/1.1\nHost: h\nContent-Length: 5\nTransfer-Encoding: chunked\n\n0\n\n{S}",
    "bare_cr_field": f"POST / HTTP/1.1\r\nHost: h\r\nX-A: 1\rTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n{S}",
    "bare_lf_chunk": f"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\n0\r\n\r\n{S}",
    "chunk_overflow": f"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n10000000000000005\r\nhello\r\n0\r\n\r\n{S}",
    "chunk_extension": "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5;" + "x" * 2000 + f"\r\nhello\r\n0\r\n\r\n{S}",
    "upgrade_0cl": f"GET /ws HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nContent-Length: {len(S)}\r\n\r\n{S}",
    "h2c": "GET / HTTP/1.1\r\nHost: h\r\nUpgrade: h2c\r\nConnection: Upgrade, HTTP2-Settings\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n",
    "userinfo": f"GET http://user:pw@h/ HTTP/1.1\r\nHost: h\r\n\r\n{S}",
}


def records(op, data):
    out = bytearray()
    for i in range(0, len(data), 255):
        piece = data[i : i + 255]
        out += bytes([op, len(piece)]) + piece
    return bytes(out)


def main():
    here = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus", "http1_parser")
    os.makedirs(here, exist_ok=True)
    for name, request in CASES.items():
        seed = records(0, request.encode()) + records(1, (OK * 2).encode())
        with open(os.path.join(here, f"smuggle_{name}"), "wb") as f:
            f.write(seed)
    print(f"{len(CASES)} seeds in {here}")


if __name__ == "__main__":
    main()
