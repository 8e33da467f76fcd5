#!/usr/bin/env python3
"""Knocks on a node's peer port as an outsider would, for the UMS tests.

  peer_probe.py plain PEER CLUSTER NODE
      Plain TCP: sends a Hello frame claiming to be NODE of CLUSTER.
  peer_probe.py tls PEER CLUSTER NODE CA CERT KEY
      TLS with the client certificate CERT/KEY (the server is checked against CA), then
      the same Hello.

Prints JSON: {"handshake": "ok" | error text, "answer": hex of what came back (at most
4 KiB, within 3 s), "hello_from": the node id of a Hello answer, or null}.
"""
import json
import socket
import ssl
import sys


def varint(n):
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def hello_frame(cluster, node):
    cluster = cluster.encode()
    hello = b"\x0a" + varint(len(cluster)) + cluster + b"\x10" + varint(node)
    frame = b"\x0a" + varint(len(hello)) + hello
    return len(frame).to_bytes(4, "big") + frame


def read_varint(data, i):
    shift = value = 0
    while True:
        byte = data[i]
        i += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, i


def hello_node(answer):
    """The node id of a Hello frame at the start of `answer`, if it is one."""
    try:
        length = int.from_bytes(answer[:4], "big")
        frame = answer[4:4 + length]
        if len(frame) < length or frame[0] != 0x0A:
            return None
        hello_len, i = read_varint(frame, 1)
        hello = frame[i:i + hello_len]
        j, node = 0, None
        while j < len(hello):
            tag, j = read_varint(hello, j)
            if tag == 0x0A:
                n, j = read_varint(hello, j)
                j += n
            elif tag == 0x10:
                node, j = read_varint(hello, j)
            else:
                return None
        return node
    except (IndexError, ValueError):
        return None


def main():
    mode, peer, cluster, node = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    host, port = peer.rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=3)
    handshake = "ok"
    if mode == "tls":
        ca, cert, key = sys.argv[5:8]
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.load_verify_locations(ca)
        context.load_cert_chain(cert, key)
        try:
            sock = context.wrap_socket(sock)
        except (ssl.SSLError, OSError) as e:
            handshake = str(e)
    answer = b""
    if handshake == "ok":
        try:
            sock.sendall(hello_frame(cluster, node))
            while len(answer) < 4096:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                answer += chunk
                if hello_node(answer) is not None:
                    break
        except (OSError, ssl.SSLError) as e:
            handshake = handshake if answer else f"after the handshake: {e}"
    print(json.dumps({"handshake": handshake, "answer": answer.hex(), "hello_from": hello_node(answer)}))


main()
