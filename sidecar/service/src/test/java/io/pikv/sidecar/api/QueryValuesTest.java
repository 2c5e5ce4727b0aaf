package io.pikv.sidecar.api;

import org.junit.jupiter.api.Test;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

/** How the step route reads {@code ?position}: split at '&' only, the name matched exactly, every parameter read. */
class QueryValuesTest {

    @Test
    void parametersAreSplitAtAmpersandsOnlyAndNamesMatchExactly() {
        assertThat(BinaryRoutes.queryValues(null, "position")).isEmpty();
        assertThat(BinaryRoutes.queryValues("", "position")).isEmpty();
        assertThat(BinaryRoutes.queryValues("position=7", "position")).containsExactly("7");
        assertThat(BinaryRoutes.queryValues("position=7;8", "position")).containsExactly("7;8");
        assertThat(BinaryRoutes.queryValues("POSITION=7&Position=8", "position")).isEmpty();
        assertThat(BinaryRoutes.queryValues("a=1&position=%37&position&b", "position")).containsExactly("7", "");
        assertThat(BinaryRoutes.queryValues("positio%6E=%2B5", "position")).containsExactly("+5");
        // Past the 1,024 parameters a framework's reader stops at, the value is still read.
        String many = "x=1&".repeat(2_000) + "position=3";
        assertThat(BinaryRoutes.queryValues(many, "position")).containsExactly("3");
        assertThatThrownBy(() -> BinaryRoutes.queryValues("position=%zz", "position"))
                .isInstanceOf(IllegalArgumentException.class);
    }
}
