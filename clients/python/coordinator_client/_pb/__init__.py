"""Stubs generated from api/coordinator/v1/coordinator.proto and rpc_status.proto.

scripts/gen-api.sh regenerates them; do not edit them by hand.
"""
