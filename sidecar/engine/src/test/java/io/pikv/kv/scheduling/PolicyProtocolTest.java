package io.pikv.kv.scheduling;

import org.junit.jupiter.api.Test;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

/** The policy protocol refuses a slip instead of ranking wrongly, and use counts do not wrap. */
class PolicyProtocolTest {
    @Test
    void anEntryOfferedTwiceIsRefusedEvenInAnotherTier() {
        StreamingLlm policy = new StreamingLlm(0, 10);
        Entries e = new Entries(4);
        e.setNow(0);
        int a = e.add(1, 5, -1, false, 0);
        policy.offer(e, a); // in the recent window
        e.setNow(20);
        // Out of the window by now: a second offer would rank it too, and a withdraw would leave it in one heap.
        assertThatThrownBy(() -> policy.offer(e, a)).isInstanceOf(IllegalStateException.class)
                .hasMessage("entry " + a + " is offered already");
        policy.withdraw(e, a);
        assertThat(policy.victim(e)).isNegative(); // nothing left to evict
    }

    @Test
    void useCountsStopAtTheirMaximumInsteadOfWrapping() {
        Entries e = new Entries(4);
        int hot = e.add(1, 0, -1, false, 0);
        e.accesses[hot] = Integer.MAX_VALUE - 1;
        e.touch(hot, 0);
        e.touch(hot, 0);
        e.attend(hot, 0.5, true);
        assertThat(e.accesses(hot)).isEqualTo(Integer.MAX_VALUE);
        // Utility by frequency alone: the hot block stays; the block used once goes.
        Utility utility = new Utility(0, 0, 1, 1);
        int cold = e.add(2, 0, -1, false, 0);
        e.touch(cold, 0);
        utility.offer(e, hot);
        utility.offer(e, cold);
        assertThat(utility.victim(e)).isEqualTo(cold);
    }
}
