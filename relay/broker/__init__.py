"""Broker mode: nodes meet in Redis instead of (or besides) POSTing to each other.

Each admin-posted message is published once (a Lua script appends it to the
instance's capped stream and publishes it on the instance's channel); every
node receives it once on its pattern subscription and hands it to its hub.
The stream is the cluster-wide history a node reloads whenever it
(re)subscribes, so a replay on any node covers the whole cluster.
"""
