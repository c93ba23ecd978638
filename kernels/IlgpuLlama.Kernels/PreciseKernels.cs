namespace IlgpuLlama.Kernels;

// Float64 accumulation for evaluation runs (the engine's Accumulation.Fp64): the matmuls (prefill,
// decode and LM head) and RMSNorm compute every product and sum in float64 and round once,
// to the fp32 activation they store. Activations stay fp32 between kernels, so nothing else in the
// engine changes. Why: with exact weights and an fp32 KV cache, the fp32 sums of the matmuls and
// norms are most of what is left between the engine and a float64 forward pass (log-probabilities
// 1e-4 to 2e-4 off on the golden model, whose logits reach 50; 2e-5 to 5e-5 with these kernels and
// attention_fp32_f64's float64 scores). What remains: fp32 storage of the activations between
// kernels, attention's softmax and P.V sums, SwiGLU and RoPE in fp32.
//
// gemm_f64 (prompts): the prefill GEMM's tiles and staging (GemmKernels, specialised with Fp64Sum
// instead of Fp32Sum): 16 float64 sums per thread, so a prompt keeps the GEMM's reuse of every
// staged value (compute-bound at the P100's half-rate fp64 instead of re-reading x per row).
//
// matmul_f64 (decode steps and the LM head): y[m, n] (+)= sum_k W[n, k] x[m, k], W in any WeightFormat (16-bit values widened,
// block formats dequantised 16 weights at a time as the GEMM stages them). The product of two fp32
// values is exact in float64, so the only roundings are the float64 sums (K x 2^-53) and the final
// store. Decomposition: one warp per weight row, four warps per group on a GPU (grid = N / 4; a
// group of one warp would cap an sm_60 SM at 32 groups, half its warps), one warp on the CPU
// accelerator (of one lane on the engine's CPU device); lanes stride over the row in 128-bit chunks (coalesced, as the decode matvec),
// and the warp walks the M inputs four at a time, reducing four float64 sums with shuffles per
// tile; the row (K x 2 bytes) stays in L1 across tiles. No shared memory, no barriers. Memory-bound at decode
// like the matvec (float64 FMAs run at half the fp32 rate on the P100 and the H100); at prefill it
// re-reads x per row from L1/L2, which is why prompts take gemm_f64.
//
// rmsnorm_f64: y = x / sqrt(mean(x^2) + eps) * g with the sum, the scale and both products in
// float64. One warp per row (group = one warp): a launch has only batch or chunk rows.

/// <summary>Arguments of <see cref="PreciseKernels.MatMul{TW}"/>.</summary>
public struct PreciseMatMulArgs
{
    public ArrayView<F4> X;          // [M, K / 4] fp32
    public ArrayView<U4> W;          // [N, chunks] weight chunks of the format
    public ArrayView<ushort> Scales; // the block formats' side words (GEMM layout)
    public ArrayView<float> Y;       // [M, N] fp32 (may not alias x)
    public int M, N, K;
    /// <summary>1: y += W x (the residual added in float64 before the one rounding); 0: y = W x.</summary>
    public int Accumulate;
}

/// <summary>Arguments of <see cref="PreciseKernels.RmsNorm{TW}"/>.</summary>
public struct PreciseRmsNormArgs
{
    public ArrayView<float> X;       // [rows, n] fp32
    public ArrayView<ushort> Weight; // [n] 16-bit
    public ArrayView<float> Y;       // [rows, n] fp32 (may not alias x)
    public int N;
    public double Eps;
}

/// <summary>Float64-accumulating matmul and RMSNorm for evaluation runs. See the file header.</summary>
public static class PreciseKernels
{
    /// <summary>Inputs (rows of x) one pass of a group dots with its weight row.</summary>
    public const int InputsPerPass = 4;

    /// <summary>y (+)= x W^T with float64 products and sums, one warp per weight row (group: whole warps). See the file header.</summary>
    public static void MatMul<TW>(PreciseMatMulArgs a)
        where TW : struct, IWeightFormat
    {
        int row = Grid.IdxX * (Group.DimX / Warp.WarpSize) + Warp.WarpIdx;
        if (row >= a.N)
            return; // the whole warp: no group-wide synchronisation follows
        int lane = Warp.LaneIdx;
        int lanes = Warp.WarpSize;
        int k4 = a.K / 4;
        // A unit is what one lane handles per step: a 128-bit chunk of eight 16-bit weights, or 16
        // dequantised weights of a block format (the GEMM's staging unit).
        bool sixteenBit = default(TW).BlockWeights == 1;
        int unit = sixteenBit ? 8 : 16;
        int units = a.K / unit;
        for (int m0 = 0; m0 < a.M; m0 += InputsPerPass)
        {
            int inputs = XMath.Min(InputsPerPass, a.M - m0);
            double s0 = 0, s1 = 0, s2 = 0, s3 = 0;
            for (int u = lane; u < units; u += lanes)
            {
                int kb = u * unit;
                W8 lo, hi = default;
                if (sixteenBit)
                    lo = MatVecKernels.Widen<TW>(a.W[row * (a.K / 8) + u]);
                else
                    GemmKernels.BlockSixteen<TW>(a.W, a.Scales, row, a.K, kb, out lo, out hi);
                int xi = m0 * k4 + kb / 4;
                s0 = Dot(s0, lo, hi, a.X, xi, sixteenBit);
                if (inputs > 1)
                    s1 = Dot(s1, lo, hi, a.X, xi + k4, sixteenBit);
                if (inputs > 2)
                    s2 = Dot(s2, lo, hi, a.X, xi + 2 * k4, sixteenBit);
                if (inputs > 3)
                    s3 = Dot(s3, lo, hi, a.X, xi + 3 * k4, sixteenBit);
            }
            s0 = WarpSum(s0);
            s1 = WarpSum(s1);
            s2 = WarpSum(s2);
            s3 = WarpSum(s3);
            if (lane == 0)
            {
                Store(a, m0, row, s0);
                if (inputs > 1)
                    Store(a, m0 + 1, row, s1);
                if (inputs > 2)
                    Store(a, m0 + 2, row, s2);
                if (inputs > 3)
                    Store(a, m0 + 3, row, s3);
            }
        }
    }

    /// <summary>Adds the float64 dot product of a unit's weights with x's values at F4 index <paramref name="xi"/> on.</summary>
    static double Dot(double s, W8 lo, W8 hi, ArrayView<F4> x, int xi, bool eightOnly)
    {
        s = Dot4(s, lo.V0, lo.V1, lo.V2, lo.V3, x[xi]);
        s = Dot4(s, lo.V4, lo.V5, lo.V6, lo.V7, x[xi + 1]);
        if (eightOnly)
            return s;
        s = Dot4(s, hi.V0, hi.V1, hi.V2, hi.V3, x[xi + 2]);
        return Dot4(s, hi.V4, hi.V5, hi.V6, hi.V7, x[xi + 3]);
    }

    static double Dot4(double s, float w0, float w1, float w2, float w3, F4 x)
    {
        s += (double)w0 * x.X;
        s += (double)w1 * x.Y;
        s += (double)w2 * x.Z;
        s += (double)w3 * x.W;
        return s;
    }

    static void Store(PreciseMatMulArgs a, int m, int n, double sum)
    {
        int i = m * a.N + n;
        a.Y[i] = (float)(a.Accumulate != 0 ? a.Y[i] + sum : sum);
    }

    /// <summary>The prefill GEMM's tiling (<see cref="GemmKernels"/>) with float64 sums of exact products, rounded once to fp32. See the file header.</summary>
    public static void GemmF64<TW>(GemmArgs a)
        where TW : struct, IWeightFormat => GemmKernels.GemmTile<TW, Fp64Sum>(a);

    /// <summary>Float64 sum over the warp; every lane receives the total.</summary>
    static double WarpSum(double value)
    {
        for (int offset = Warp.WarpSize / 2; offset > 0; offset >>= 1)
            value += Warp.ShuffleXor(value, offset);
        return value;
    }

    /// <summary>y = rmsnorm(x) * weight in float64, one warp per row. See the file header.</summary>
    public static void RmsNorm<TW>(PreciseRmsNormArgs a)
        where TW : struct, IWeightFormat
    {
        int start = Grid.IdxX * a.N;
        int lane = Warp.LaneIdx;
        int lanes = Warp.WarpSize;
        double ss = 0;
        for (int i = lane; i < a.N; i += lanes)
        {
            double v = a.X[start + i];
            ss += v * v;
        }
        ss = WarpSum(ss);
        double inv = 1.0 / XMath.Sqrt(ss / a.N + a.Eps);
        TW f = default;
        for (int i = lane; i < a.N; i += lanes)
            a.Y[start + i] = (float)(a.X[start + i] * inv * f.One(a.Weight[i]));
    }

    // ---- declaration, launchers, cost ------------------------------------------------------

    /// <summary>Family name (this file).</summary>
    public const string Family = "precise";

    /// <summary><see cref="MatMul{TW}"/>, per weight format.</summary>
    public static KernelDefinition<PreciseMatMulArgs> MatMulKernel { get; } = KernelDefinition<PreciseMatMulArgs>.Explicit("matmul_f64", Family, MatMul<Fp16Format.Device>,
        t => new LaunchShape(t.PreciseGroup, 0, "one warp per weight row"), WeightFormat.All);

    /// <summary>Threads per group of <see cref="RmsNormKernel"/> on a GPU (the static check's launch shape): one warp; the launcher uses the accelerator's warp size.</summary>
    const int WarpGroup = 32;

    /// <summary><see cref="GemmF64{TW}"/>, per weight format.</summary>
    public static KernelDefinition<GemmArgs> GemmKernel { get; } = KernelDefinition<GemmArgs>.Explicit("gemm_f64", Family, GemmF64<Fp16Format.Device>,
        t => new LaunchShape(t.GemmTDim * t.GemmTDim, 0, $"{t.GemmTDim}x{t.GemmTDim} threads per {4 * t.GemmTDim}x{4 * t.GemmTDim} tile, as the gemm"), WeightFormat.All);

    /// <summary><see cref="RmsNorm{TW}"/>, per 16-bit format.</summary>
    public static KernelDefinition<PreciseRmsNormArgs> RmsNormKernel { get; } = KernelDefinition<PreciseRmsNormArgs>.Explicit("rmsnorm_f64", Family, RmsNorm<Fp16Format.Device>,
        t => new LaunchShape(WarpGroup, 0, "one warp per row"), WeightFormat.SixteenBit);

    /// <summary>y[m, :] (+)= x[m, :] W^T for <paramref name="m"/> rows of x, in float64 (N = W's rows, K = W's columns).</summary>
    public static void MatMulF64(this LlamaKernels k, ArrayView<float> x, WeightMatrix w, ArrayView<float> y, int m, bool accumulate)
    {
        w.Check("matmul_f64");
        Require.Length(x, (long)m * w.Cols, "matmul_f64 x");
        Require.Length(y, (long)m * w.Rows, "matmul_f64 output");
        if (m == 0)
            return;
        int warp = k.Accelerator.WarpSize;
        Require.That(k.Tuning.PreciseGroup >= warp && k.Tuning.PreciseGroup % warp == 0,
            $"matmul_f64: a group of {k.Tuning.PreciseGroup} threads is not whole warps of {warp} (KernelTuning.PreciseGroup)");
        var args = new PreciseMatMulArgs { X = x.Cast<F4>(), W = w.Chunks, Scales = w.Scales, Y = y, M = m, N = w.Rows, K = w.Cols, Accumulate = accumulate ? 1 : 0 };
        int rowsPerGroup = k.Tuning.PreciseGroup / warp;
        k.Launch(MatMulKernel, MatMulKernel.Variant(w.Format), new KernelConfig((w.Rows + rowsPerGroup - 1) / rowsPerGroup, k.Tuning.PreciseGroup), args);
    }

    /// <summary>C[m, :] (+)= X[m, :] W^T for prompt processing with the GEMM's tiles and float64 sums (<see cref="GemmF64{TW}"/>).</summary>
    public static void GemmF64(this LlamaKernels k, ArrayView<float> x, WeightMatrix w, ArrayView<float> c, int m, bool accumulate) =>
        k.LaunchGemm(GemmKernel, x, w, c, m, accumulate);

    /// <summary>y = rmsnorm(x) * weight over <paramref name="rows"/> rows of <paramref name="n"/>, in float64.</summary>
    public static void RmsNormF64(this LlamaKernels k, ArrayView<float> x, WeightVector weight, ArrayView<float> y, int rows, int n, double eps)
    {
        Require.Length(x, (long)rows * n, "rmsnorm_f64 input");
        Require.Length(y, (long)rows * n, "rmsnorm_f64 output");
        Require.Length(weight.Values, n, "rmsnorm_f64 weight");
        if (rows == 0)
            return;
        var args = new PreciseRmsNormArgs { X = x, Weight = weight.Values, Y = y, N = n, Eps = eps };
        k.Launch(RmsNormKernel, RmsNormKernel.Variant(weight.Format), new KernelConfig(rows, k.Accelerator.WarpSize), args);
    }

    /// <summary>Minimum bytes of <see cref="MatMulF64"/>: as the GEMM's (W and x read once, y written once, read too when accumulating).</summary>
    public static long MatMulBytesMoved(WeightFormat format, int m, int n, int k, bool accumulate) => GemmKernels.BytesMoved(format, m, n, k, accumulate);

    /// <summary>Floating-point operations of <see cref="MatMulF64"/> (float64).</summary>
    public static long MatMulFlops(int m, int n, int k) => 2L * m * n * k;
}

/// <summary>The precise family: float64-accumulating matmul and RMSNorm (the benchmark cases: <c>PreciseBenchCases</c> in kernels/IlgpuLlama.Kernels.Bench).</summary>
sealed class PreciseFamily : KernelFamily
{
    public override string Name => PreciseKernels.Family;

    public override IReadOnlyList<IKernelDefinition> Kernels => [PreciseKernels.MatMulKernel, PreciseKernels.GemmKernel, PreciseKernels.RmsNormKernel];
}
