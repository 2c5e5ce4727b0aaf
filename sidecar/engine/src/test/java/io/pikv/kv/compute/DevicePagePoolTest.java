package io.pikv.kv.compute;

import org.junit.jupiter.api.Test;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

class DevicePagePoolTest {

    @Test
    void handsOutPagesUpToTheBudgetAndRecyclesThem() {
        DevicePagePool pool = new DevicePagePool(1000, 3500);
        assertThat(pool.maxPages()).isEqualTo(3);
        assertThat(pool.slabBytes()).isEqualTo(3000);
        int a = pool.allocate();
        int b = pool.allocate();
        int c = pool.allocate();
        assertThat(new int[] {a, b, c}).containsExactly(0, 1, 2);
        assertThat(pool.allocate()).isEqualTo(-1);
        assertThat(pool.pagesInUse()).isEqualTo(3);
        pool.release(b);
        assertThat(pool.pagesInUse()).isEqualTo(2);
        assertThat(pool.allocate()).isEqualTo(b);
        assertThat(pool.offset(2)).isEqualTo(2000);
        assertThatThrownBy(() -> pool.release(7)).hasMessageContaining("page 7 is not allocated");
        pool.release(a);
        assertThatThrownBy(() -> pool.release(a)).hasMessageContaining("is not allocated");
        assertThatThrownBy(() -> new DevicePagePool(1000, 999)).hasMessageContaining("below one page");
    }
}
