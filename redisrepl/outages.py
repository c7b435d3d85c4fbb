"""The log of something that keeps failing and retrying (pure, apart from
the clock and the logger it is given).

A hub down for an hour must not write a line per retry: the operator needs
to know when it started, what it is, that it goes on, and when it ended.
An ``Outage`` logs:

- the first failure (warn): ``copies: <the cause>; retrying with backoff``;
- a change of cause (warn): ``copies: still failing, now: <the cause>``;
- while it lasts, a summary every ``summary_every`` seconds (warn):
  ``copies: still failing since 12:03:07 (41 retries): <the cause>``;
- the end (info): ``copies: back after 312.4s (41 retries)``.

Each retry is a debug line, kept with ``--log-level debug``.
"""

import time

from twisted.logger import Logger

from redisrepl.interfaces import Clock

#: Seconds between two "still failing" lines of one outage.
SUMMARY_EVERY = 60.0


class Outage:
    def __init__(self, clock: Clock, log: Logger, what: str, summary_every: float = SUMMARY_EVERY) -> None:
        self._clock = clock
        self._log = log
        #: what fails, as the lines name it ("copies to the remote side")
        self.what = what
        self._summary_every = summary_every
        self.since: float | None = None  # when it started, None while all is well
        self.retries = 0
        self._cause = ""
        self._said = 0.0  # when the last warn line was written

    def failed(self, cause: object, retry_in: float | None = None) -> None:
        """Another failure (``cause``: the error; ``retry_in``: seconds to the next try)."""
        now = self._clock.seconds()
        text = str(cause)
        if self.since is None:
            self.since, self.retries, self._cause, self._said = now, 0, text, now
            self._log.warn("{what}: {cause}; retrying with backoff", what=self.what, cause=text)
        else:
            self.retries += 1
            if text != self._cause:
                self._cause, self._said = text, now
                self._log.warn("{what}: still failing, now: {cause}", what=self.what, cause=text)
            elif now - self._said >= self._summary_every:
                self._said = now
                self._log.warn(
                    "{what}: still failing since {since} ({retries} retries): {cause}",
                    what=self.what,
                    since=time.strftime("%H:%M:%S", time.localtime(self.since)),
                    retries=self.retries,
                    cause=text,
                )
        if retry_in is not None:
            self._log.debug("{what}: retrying in {delay:.1f}s", what=self.what, delay=retry_in)

    def recovered(self) -> None:
        """It works again: one line if it had failed."""
        if self.since is None:
            return
        self._log.info(
            "{what}: back after {duration:.1f}s ({retries} retries)",
            what=self.what,
            duration=self._clock.seconds() - self.since,
            retries=self.retries,
        )
        self.since = None
