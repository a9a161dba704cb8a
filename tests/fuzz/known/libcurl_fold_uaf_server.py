# SPDX-License-Identifier: BSD-3-Clause
import socket, sys, threading
resp=[b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", b"HTTP/1.1 200\rKnoCO\n tent-Length: 0\r\n\r\n"]
s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR,1); s.bind(("127.0.0.1",0)); s.listen(5)
print(s.getsockname()[1], flush=True)
i=0
while i<2:
    c,_=s.accept()
    while i<2:
        d=b""
        while b"\r\n\r\n" not in d:
            x=c.recv(4096)
            if not x: break
            d+=x
        if not d: break
        c.sendall(resp[i]); i+=1
        c.shutdown(socket.SHUT_WR); c.close(); break
