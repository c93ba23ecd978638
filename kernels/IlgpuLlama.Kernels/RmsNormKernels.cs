namespace IlgpuLlama.Kernels;

// RMSNorm: y[r, :] = x[r, :] * rsqrt(mean(x[r, :]^2) + eps) * w, all in fp32 (weights widened).
// Decomposition: one group per row (grid = rows, group = 1024 threads on a GPU, so a 2048-wide row
// is two values per thread: at decode the kernel is latency-bound, not bandwidth-bound). Rows of at
// most 4 x group values are read once into registers (one global round trip), reduced with warp
// shuffles, then across warps by warp 0, and scaled from registers; longer rows take two passes.

/// <summary>Arguments of <see cref="RmsNormKernels.RmsNorm{TW}"/>.</summary>
public struct RmsNormArgs
{
    public ArrayView<float> X;       // [rows, n] fp32
    public ArrayView<ushort> Weight; // [n] 16-bit
    public ArrayView<float> Y;       // [rows, n] fp32 out (may not alias x)
    public int N;
    public float Eps;
}

/// <summary>Root-mean-square layer norm.</summary>
public static class RmsNormKernels
{
    /// <summary>Most warps one group may have (sizes the shared scratch).</summary>
    public const int MaxWarps = 64;

    /// <summary>y = rmsnorm(x) * weight, one group per row. See the file header.</summary>
    public static void RmsNorm<TW>(RmsNormArgs a)
        where TW : struct, IWeightFormat
    {
        var x = a.X;
        var weight = a.Weight;
        var y = a.Y;
        int n = a.N;
        float eps = a.Eps;
        var scratch = SharedMemory.Allocate<float>(MaxWarps + 1);
        int rowStart = Grid.IdxX * n;
        int tid = Group.IdxX;
        int dim = Group.DimX;
        TW f = default;

        if (n <= 4 * dim)
        {
            // Common case (a row is at most four values per thread): one read of x, kept in registers.
            int i0 = tid, i1 = tid + dim, i2 = tid + 2 * dim, i3 = tid + 3 * dim;
            float v0 = i0 < n ? x[rowStart + i0] : 0f;
            float v1 = i1 < n ? x[rowStart + i1] : 0f;
            float v2 = i2 < n ? x[rowStart + i2] : 0f;
            float v3 = i3 < n ? x[rowStart + i3] : 0f;
            float inv = InverseRms(v0 * v0 + v1 * v1 + v2 * v2 + v3 * v3, n, eps, scratch);
            if (i0 < n)
                y[rowStart + i0] = v0 * inv * f.One(weight[i0]);
            if (i1 < n)
                y[rowStart + i1] = v1 * inv * f.One(weight[i1]);
            if (i2 < n)
                y[rowStart + i2] = v2 * inv * f.One(weight[i2]);
            if (i3 < n)
                y[rowStart + i3] = v3 * inv * f.One(weight[i3]);
            return;
        }

        float ss = 0f;
        for (int i = tid; i < n; i += dim)
        {
            float v = x[rowStart + i];
            ss += v * v;
        }
        float scale = InverseRms(ss, n, eps, scratch);
        for (int i = tid; i < n; i += dim)
            y[rowStart + i] = x[rowStart + i] * scale * f.One(weight[i]);
    }

    /// <summary>Group-wide sum of squares to 1/sqrt(mean + eps): warp shuffles, then warp 0 over the warp sums.</summary>
    static float InverseRms(float ss, int n, float eps, ArrayView<float> scratch)
    {
        ss = DeviceMath.WarpSum(ss);
        int warps = Group.DimX / Warp.WarpSize;
        if (warps > 1)
        {
            if (Warp.IsFirstLane)
                scratch[Warp.WarpIdx] = ss;
            Group.Barrier();
            if (Warp.WarpIdx == 0)
            {
                float total = 0f;
                for (int w = Warp.LaneIdx; w < warps; w += Warp.WarpSize)
                    total += scratch[w];
                total = DeviceMath.WarpSum(total);
                if (Warp.IsFirstLane)
                    scratch[MaxWarps] = total;
            }
            Group.Barrier();
            ss = scratch[MaxWarps];
        }
        return 1.0f / XMath.Sqrt(ss / n + eps);
    }

    // ---- declaration, launcher, cost ------------------------------------------------------

    /// <summary>Family name (this file).</summary>
    public const string Family = "rmsnorm";

    /// <summary><see cref="RmsNorm{TW}"/>, per 16-bit format.</summary>
    public static KernelDefinition<RmsNormArgs> RmsNormKernel { get; } = KernelDefinition<RmsNormArgs>.Explicit("rmsnorm", Family, RmsNorm<Fp16Format.Device>,
        t => new LaunchShape(t.RmsNormGroup, 0, "one group per row"), WeightFormat.SixteenBit);

    /// <summary>y = rmsnorm(x) * weight over <paramref name="rows"/> rows of <paramref name="n"/>.</summary>
    public static void RmsNorm(this LlamaKernels k, ArrayView<float> x, WeightVector weight, ArrayView<float> y, int rows, int n, float eps)
    {
        Require.Length(x, (long)rows * n, "rmsnorm input");
        Require.Length(y, (long)rows * n, "rmsnorm output");
        Require.Length(weight.Values, n, "rmsnorm weight");
        var args = new RmsNormArgs { X = x, Weight = weight.Values, Y = y, N = n, Eps = eps };
        k.Launch(RmsNormKernel, RmsNormKernel.Variant(weight.Format), new KernelConfig(rows, k.Tuning.RmsNormGroup), args);
    }

    /// <summary>Bytes moved (x read once, y written once, weights once).</summary>
    public static long BytesMoved(WeightFormat format, int rows, int n) => rows * 8L * n + format.VectorBytes(n);

    /// <summary>FLOPs: square-and-add, then two multiplies per element.</summary>
    public static long Flops(int rows, int n) => rows * 4L * n;
}

/// <summary>The rmsnorm family: its kernel (the benchmark cases: <c>RmsNormBenchCases</c> in kernels/IlgpuLlama.Kernels.Bench).</summary>
sealed class RmsNormFamily : KernelFamily
{
    public override string Name => RmsNormKernels.Family;

    public override IReadOnlyList<IKernelDefinition> Kernels => [RmsNormKernels.RmsNormKernel];
}
