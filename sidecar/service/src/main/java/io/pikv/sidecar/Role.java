package io.pikv.sidecar;

/** What a sidecar does: see {@link SidecarConfig#role()}. */
public enum Role {
    shard,
    gateway
}
