from twisted.application.service import ServiceMaker

redisrepl = ServiceMaker(
    "redisrepl",
    "redisrepl.tap",
    "Replicate a Redis namespace to a remote Redis behind Webdis and an mTLS proxy",
    "redisrepl",
)
