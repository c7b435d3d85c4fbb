"""A TCP proxy that adds a round trip (the WAN between a site and its hub).

Every byte is forwarded after ``rtt / 2`` seconds in each direction, in
order, without limiting bandwidth: a request and its reply take ``rtt``
more than on loopback, as across a WAN. TLS passes through untouched (the
daemon still talks to nginx). Runs an asyncio loop in a thread of its own.
"""

import asyncio
import socket
import threading


class DelayProxy:
    def __init__(self, target_port: int, rtt: float, host: str = "127.0.0.1"):
        self.target = (host, target_port)
        self.delay = rtt / 2
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "DelayProxy":
        self._thread.start()
        self._ready.wait(10)
        return self

    def __exit__(self, *exc) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(asyncio.start_server(self._serve, "127.0.0.1", 0))
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()
        server.close()

    async def _serve(self, client_reader, client_writer) -> None:
        try:
            server_reader, server_writer = await asyncio.open_connection(*self.target)
        except OSError:
            client_writer.close()
            return
        for writer in (client_writer, server_writer):
            writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        await asyncio.gather(
            self._pipe(client_reader, server_writer), self._pipe(server_reader, client_writer), return_exceptions=True
        )

    async def _pipe(self, reader, writer) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                data = await reader.read(1 << 16)
                if not data:
                    break
                # same delay for every chunk: call_later keeps them in order
                loop.call_later(self.delay, self._forward, writer, data)
        finally:
            loop.call_later(self.delay, self._close, writer)

    @staticmethod
    def _forward(writer, data) -> None:
        if not writer.is_closing():
            writer.write(data)

    @staticmethod
    def _close(writer) -> None:
        if not writer.is_closing():
            writer.close()
