package io.pikv.kv.compression;

import org.junit.jupiter.api.Test;

import java.util.Random;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.within;

/** The eigen-solver behind low-rank fitting: A·v = λ·v, orthonormal vectors, descending order. */
class SymmetricEigenTest {

    private static double[][] randomSymmetric(int n, Random rnd) {
        double[][] a = new double[n][n];
        for (int i = 0; i < n; i++) {
            for (int j = 0; j <= i; j++) {
                a[i][j] = a[j][i] = rnd.nextGaussian();
            }
        }
        return a;
    }

    private static void assertDecomposes(double[][] a, SymmetricEigen eig) {
        int n = a.length;
        double[] lambda = eig.values();
        double norm = 0;
        for (double[] row : a) {
            for (double x : row) {
                norm = Math.max(norm, Math.abs(x));
            }
        }
        for (int r = 0; r < n; r++) {
            if (r > 0) {
                assertThat(lambda[r]).isLessThanOrEqualTo(lambda[r - 1]);
            }
            double[] v = eig.vector(r);
            for (int i = 0; i < n; i++) {
                double av = 0;
                for (int k = 0; k < n; k++) {
                    av += a[i][k] * v[k];
                }
                assertThat(av).as("(A v - λ v)[%d] of vector %d", i, r).isCloseTo(lambda[r] * v[i], within(1e-9 * n * norm));
            }
            for (int s = 0; s <= r; s++) {
                double dot = 0;
                double[] u = eig.vector(s);
                for (int k = 0; k < n; k++) {
                    dot += u[k] * v[k];
                }
                assertThat(dot).isCloseTo(s == r ? 1 : 0, within(1e-10 * n));
            }
        }
    }

    @Test
    void decomposesRandomSymmetricMatrices() {
        Random rnd = new Random(5);
        for (int n : new int[] {1, 2, 3, 17, 64, 128}) {
            double[][] a = randomSymmetric(n, rnd);
            assertDecomposes(a, SymmetricEigen.of(a));
        }
    }

    @Test
    void knownSpectrumComesOutSortedWithRepeatsAndZeros() {
        // Q diag(5, 3, 3, 0, -2) Qᵀ for a random rotation Q: repeated, zero and negative eigenvalues.
        double[] lambda = {0, 3, -2, 5, 3};
        int n = lambda.length;
        Random rnd = new Random(9);
        double[][] q = SymmetricEigen.of(randomSymmetric(n, rnd)).vectors();
        double[][] a = new double[n][n];
        for (int i = 0; i < n; i++) {
            for (int j = 0; j < n; j++) {
                for (int k = 0; k < n; k++) {
                    a[i][j] += q[k][i] * lambda[k] * q[k][j];
                }
            }
        }
        SymmetricEigen eig = SymmetricEigen.of(a);
        assertThat(eig.values()).containsExactly(new double[] {5, 3, 3, 0, -2}, within(1e-12));
        assertDecomposes(a, eig);
    }

    @Test
    void aCovarianceOfRankTwoHasTwoNonZeroEigenvalues() {
        // Points on a plane through the origin in R^6: the covariance has rank 2.
        Random rnd = new Random(2);
        double[] u = new double[6];
        double[] w = new double[6];
        for (int i = 0; i < 6; i++) {
            u[i] = rnd.nextGaussian();
            w[i] = rnd.nextGaussian();
        }
        double[][] cov = new double[6][6];
        for (int t = 0; t < 50; t++) {
            double a = rnd.nextGaussian();
            double b = rnd.nextGaussian();
            for (int i = 0; i < 6; i++) {
                for (int j = 0; j < 6; j++) {
                    cov[i][j] += (a * u[i] + b * w[i]) * (a * u[j] + b * w[j]);
                }
            }
        }
        double[] lambda = SymmetricEigen.of(cov).values();
        assertThat(lambda[1]).isGreaterThan(1);
        for (int i = 2; i < 6; i++) {
            assertThat(Math.abs(lambda[i])).isLessThan(1e-10 * lambda[0]);
        }
    }
}
