"""One clear line for a cluster that wants Ray token authentication from a client that has none.

Without it a driver pointed at such a cluster logs "InvalidAuthToken" repeatedly until its connection
retries run out, then fails with a traceback. One unauthenticated-or-not gRPC call to the GCS, made the way Ray's own
Python clients make theirs (its token interceptor adds the token when ``RAY_AUTH_MODE=token`` finds
one), tells the two apart in one call, bounded by ``PROBE_TIMEOUT_S``.
"""

from __future__ import annotations

import os

from raykd.config import ConfigError

PROBE_TIMEOUT_S = 5.0
TOKEN_HELP = ("set RAY_AUTH_MODE=token and give the cluster's token in RAY_AUTH_TOKEN, in the file "
              "RAY_AUTH_TOKEN_PATH names, or in ~/.ray/auth_token (`ray get-auth-token` on the head prints it)")


class RayAuthError(ConfigError):
    """The cluster refused this client's (missing or wrong) Ray auth token."""


def check_cluster_auth(address: str) -> None:
    """Raise ``RayAuthError`` naming what to set if the GCS at ``address`` (``host:port``) refuses us.

    Anything else (a Ray Client ``ray://`` address, a cluster that does not answer, Ray internals that
    moved) is left to ``ray.init``, which reports it itself.
    """
    if "://" in address or ":" not in address:
        return
    try:
        import grpc
        from ray._private.authentication.grpc_authentication_client_interceptor import (
            SyncAuthenticationMetadataClientInterceptor,
        )
        from ray.core.generated import gcs_service_pb2, gcs_service_pb2_grpc
    except ImportError:
        return
    with grpc.insecure_channel(address) as raw:
        channel = grpc.intercept_channel(raw, SyncAuthenticationMetadataClientInterceptor())
        stub = gcs_service_pb2_grpc.NodeInfoGcsServiceStub(channel)
        try:
            stub.GetClusterId(gcs_service_pb2.GetClusterIdRequest(), timeout=PROBE_TIMEOUT_S)
        except grpc.RpcError as e:
            if e.code() == grpc.StatusCode.UNAUTHENTICATED:
                mode = os.environ.get("RAY_AUTH_MODE", "")
                what = "refused this client's token" if mode == "token" else "requires token authentication"
                raise RayAuthError(f"the Ray cluster at {address} {what}: {TOKEN_HELP}") from None
