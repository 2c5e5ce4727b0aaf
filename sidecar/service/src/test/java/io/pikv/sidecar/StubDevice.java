package io.pikv.sidecar;

import io.pikv.kv.DeviceAttention;
import io.pikv.kv.KvLayout;
import io.pikv.kv.Page;
import io.pikv.kv.PartialAttention;

import java.util.List;
import java.util.function.BooleanSupplier;
import java.util.function.Supplier;

/** A device for tests: takes every layout, answers attention as {@code attend} says, failed as {@code failed} says. */
final class StubDevice implements DeviceAttention {
    private final String name;
    private final Supplier<PartialAttention> attend;
    private final BooleanSupplier failed;

    StubDevice(String name, Supplier<PartialAttention> attend, BooleanSupplier failed) {
        this.name = name;
        this.attend = attend;
        this.failed = failed;
    }

    @Override
    public boolean supports(KvLayout layout) {
        return true;
    }

    @Override
    public void pageChanged(Page page) {
    }

    @Override
    public PartialAttention attend(List<Page> pages, float[] query) {
        return attend.get();
    }

    @Override
    public String describe() {
        return name;
    }

    @Override
    public boolean failed() {
        return failed.getAsBoolean();
    }

    @Override
    public void close() {
    }
}
