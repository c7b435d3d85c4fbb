"""Webdis (behind nginx's upstream keep-alive) can hand a connection the
reply meant for a client that went away in the middle of its request. On
the real sandbox, with such a client killed every few tens of
milliseconds: every read the daemon's store accepts is the read of its own
key, never another request's reply (those are refused as crossed)."""

import os
import subprocess

import redis
from twisted.internet import reactor, task
from twisted.internet.defer import Deferred, gatherResults
from twisted.trial.unittest import TestCase

from redisrepl.errors import LinkError
from redisrepl.hub_http import HubHTTP
from redisrepl.namespace import Namespace
from redisrepl.sandbox import Sandbox
from redisrepl.state import STRING
from redisrepl.stores import RemoteStore
from redisrepl.tls import load_policy
from redisrepl.webdis_client import WebdisClient

SECONDS = 10.0
KEYS = 8


def _arg(args, name):
    return args[args.index(name) + 1]


class CrossedRepliesTests(TestCase):
    timeout = 120

    def setUp(self):
        self.sandbox = Sandbox().start()
        self.addCleanup(self.sandbox.stop)
        args = self.sandbox.daemon_args("cx:")
        self.cert, self.key, self.ca = _arg(args, "--cert"), _arg(args, "--key"), _arg(args, "--ca")
        self.haddr = _arg(args, "--haddr")
        r = redis.Redis(port=self.sandbox.remote_redis_port)
        # values large enough that a reply spans reads, one per key
        self.values = {b"cx:%d" % i: os.urandom(3000).hex().encode() for i in range(KEYS)}
        r.mset(self.values)
        r.close()
        self.outcome = {"own": 0, "crossed": 0, "wrong": [], "killed": 0}

    def _dying_client(self, until):
        """A client that asks for a slow, large reply and is killed mid-request."""
        if reactor.seconds() >= until:
            return None
        script = (  # EVAL "local t={} for i=1,20000 do t[#t+1]=tostring(i) end return t" 0, raw
            "EVAL/local%20t%3D%7B%7D%20for%20i%3D1%2C20000%20do%20t%5B%23t%2B1%5D%3D"
            "tostring%28i%29%20end%20return%20t/0.raw"
        )
        proc = subprocess.Popen(
            [
                "curl",
                "-sk",
                "--cert",
                self.cert,
                "--key",
                self.key,
                "--cacert",
                self.ca,
                "-X",
                "POST",
                "--data-binary",
                script,
                self.haddr.rstrip("/") + "/",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

        def kill():
            proc.kill()
            proc.wait()
            self.outcome["killed"] += 1
            self._dying_client(until)

        return reactor.callLater(0.03, kill)

    async def _reader(self, store, key, until):
        while reactor.seconds() < until:
            try:
                reply = await store.read([key])
            except LinkError as e:
                if e.kind == "crossed_reply":
                    self.outcome["crossed"] += 1
                continue
            state = reply.states[0]
            if state.kind == STRING and state.value == self.values[key]:
                self.outcome["own"] += 1
            else:
                self.outcome["wrong"].append((key, repr(state)[:60]))

    async def _stress(self):
        client = WebdisClient(HubHTTP(reactor, self.haddr, load_policy(self.cert, self.key, self.ca)), reactor)
        self.addCleanup(client.close)
        store = RemoteStore(client, reactor, Namespace(b"cx:"))
        until = reactor.seconds() + SECONDS
        self._dying_client(until)
        await gatherResults([Deferred.fromCoroutine(self._reader(store, key, until)) for key in self.values])
        await task.deferLater(reactor, 0.1, lambda: None)  # the last killer's turn
        print(f"crossed replies: {self.outcome}")
        self.assertEqual(self.outcome["wrong"], [])
        self.assertGreater(self.outcome["own"], 100)
        self.assertGreater(self.outcome["killed"], 10)

    def test_a_reply_meant_for_another_request_is_never_taken_as_ones_own(self):
        return Deferred.fromCoroutine(self._stress())
