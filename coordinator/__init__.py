"""Cluster-wide coordination: replicated cluster tasks, membership, leader election and cron.

Empty for now: a node runs alone, as its own single-member cluster (see ``node.app.NodeApp.nodes``).
"""
