namespace IlgpuLlama.Kernels;

// RMSNorm: y[r, :] = x[r, :] * rsqrt(mean(x[r, :]^2) + eps) * w, all in fp32 (weights widened).
// Decomposition: one group per row (grid = rows, group = 1024 threads on a GPU, so a 2048-wide row
// is two values per thread: at decode the kernel is latency-bound, not bandwidth-bound). Rows of at
// most 4 x group values are read once into registers (one global round trip), reduced with warp
// shuffles, then across warps by warp 0, and scaled from registers; longer rows take two passes.

/// <summary>Root-mean-square layer norm.</summary>
public static class RmsNormKernels
{
    /// <summary>Most warps one group may have (sizes the shared scratch).</summary>
    public const int MaxWarps = 64;

    /// <param name="x">[rows, n] fp32</param>
    /// <param name="weight">[n] 16-bit</param>
    /// <param name="y">[rows, n] fp32 out (may not alias x)</param>
    public static void RmsNorm<TW>(ArrayView<float> x, ArrayView<ushort> weight, ArrayView<float> y, int n, float eps)
        where TW : struct, IWeightFormat
    {
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

    /// <summary>Bytes moved (x read once, y written once, weights once).</summary>
    public static long BytesMoved(int rows, int n) => rows * 8L * n + 2L * n;

    /// <summary>FLOPs: square-and-add, then two multiplies per element.</summary>
    public static long Flops(int rows, int n) => rows * 4L * n;
}
