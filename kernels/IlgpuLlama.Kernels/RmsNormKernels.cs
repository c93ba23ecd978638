namespace IlgpuLlama.Kernels;

// RMSNorm: y[r, :] = x[r, :] * rsqrt(mean(x[r, :]^2) + eps) * w, all in fp32 (weights widened).
// Decomposition: one group per row (grid = rows, group = 1024 threads on a GPU, so a 2048-wide row
// is two loads per thread: the kernel is latency-bound at decode, not bandwidth-bound). Threads stride over
// the row accumulating the sum of squares, reduce with warp shuffles then across warps through
// shared memory, and every thread then scales its own elements. x is read twice (the second read
// hits L1/L2: one row is at most a few tens of KB).

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
        var scratch = SharedMemory.Allocate<float>(MaxWarps);
        int rowStart = Grid.IdxX * n;
        float ss = 0f;
        for (int i = Group.IdxX; i < n; i += Group.DimX)
        {
            float v = x[rowStart + i];
            ss += v * v;
        }
        ss = DeviceMath.WarpSum(ss);
        if (Warp.IsFirstLane)
            scratch[Warp.WarpIdx] = ss;
        Group.Barrier();
        float total = 0f;
        int warps = Group.DimX / Warp.WarpSize;
        for (int w = 0; w < warps; w++)
            total += scratch[w];

        float inv = 1.0f / XMath.Sqrt(total / n + eps);
        TW f = default;
        for (int i = Group.IdxX; i < n; i += Group.DimX)
            y[rowStart + i] = x[rowStart + i] * inv * f.One(weight[i]);
    }

    /// <summary>Bytes moved (x read once, y written once, weights once).</summary>
    public static long BytesMoved(int rows, int n) => rows * 8L * n + 2L * n;

    /// <summary>FLOPs: square-and-add, then two multiplies per element.</summary>
    public static long Flops(int rows, int n) => rows * 4L * n;
}
