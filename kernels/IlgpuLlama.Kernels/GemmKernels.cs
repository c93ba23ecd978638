namespace IlgpuLlama.Kernels;

// Prefill matmul: C[m, n] (+)= sum_k X[m, k] * W[n, k]   (X fp32 [tokens, in], W [out, in] in any
// WeightFormat: 16-bit values widened, block formats dequantised with their scales while staged).
//
// Decomposition: classic shared-memory tiling. A group of td x td threads (td = 16 on a GPU: 256
// threads) computes a (4 td) x (4 td) tile of C (64 x 64), each thread a 4 x 4 micro-tile whose
// rows and columns are strided by td so that the final stores coalesce. Per K-step of 16, the
// group stages X[64 x 16] (128-bit loads) and W[64 x 16] (128-bit loads of 8 halves, widened
// once) in shared memory, transposed so the inner loop reads consecutive addresses; every staged
// value is then used 4 times from registers (16 FMAs per 8 shared loads). Tiles walk M fastest
// so groups that share a weight tile run together and W streams from DRAM about once.
// Launch: grid = ceil(M / 4td) * ceil(N / 4td), group = td * td. K must be a multiple of 8.

/// <summary>Shape of a prefill GEMM.</summary>
public struct GemmShape
{
    public int M, N, K;
    /// <summary>Threads per tile side (group = TDim * TDim; tile = 4 TDim square).</summary>
    public int TDim;
    /// <summary>1: C += X W^T (fused residual add); 0: C = X W^T.</summary>
    public int Accumulate;
}

/// <summary>Arguments of <see cref="GemmKernels.Gemm{TW}"/>.</summary>
public struct GemmArgs
{
    public ArrayView<F4> X;     // [M, K / 4] fp32
    public ArrayView<U4> W;     // [N, chunks] weight chunks (8 halves, 16 int8 or 32 nibble quants)
    public ArrayView<ushort> Scales; // [N, K / 32] fp16 block scales (block formats)
    public ArrayView<float> C;  // [M, N] fp32
    public GemmShape Shape;
}

/// <summary>
/// How a GEMM tile sums: a compile-time choice like the weight format, so the fp32 kernel carries
/// no float64 code. A sum is a value: <c>c = c.Add(a, b)</c> is c + a b, and <see cref="Result"/>
/// the stored fp32 value (plus what C holds when the launch accumulates into it).
/// </summary>
public interface IGemmSum<TSelf>
    where TSelf : struct, IGemmSum<TSelf>
{
    /// <summary>This sum plus a times b.</summary>
    TSelf Add(float a, float b);

    /// <summary>The fp32 value to store: the sum, plus <paramref name="existing"/> when <paramref name="accumulate"/>.</summary>
    float Result(float existing, bool accumulate);
}

/// <summary>fp32 sums (the prefill GEMM).</summary>
public struct Fp32Sum : IGemmSum<Fp32Sum>
{
    public float V;

    public readonly Fp32Sum Add(float a, float b) => new() { V = V + a * b };

    public readonly float Result(float existing, bool accumulate) => accumulate ? existing + V : V;
}

/// <summary>float64 sums of exact products, rounded once to fp32 (the precise family's <c>gemm_f64</c>).</summary>
public struct Fp64Sum : IGemmSum<Fp64Sum>
{
    public double V;

    public readonly Fp64Sum Add(float a, float b) => new() { V = V + (double)a * b };

    public readonly float Result(float existing, bool accumulate) => (float)(accumulate ? existing + V : V);
}

/// <summary>Tiled GEMM for prompt processing.</summary>
public static class GemmKernels
{
    /// <summary>Depth of one staged K-slice.</summary>
    public const int BlockK = 16;

    /// <summary>Largest tile side (TDim at most 16).</summary>
    public const int MaxTile = 64;

    const int Ld = MaxTile + 1; // +1 column of padding against bank conflicts in the transposed stores

    /// <summary>C (+)= X W^T over one 4td x 4td tile per group, fp32 sums. See the file header.</summary>
    public static void Gemm<TW>(GemmArgs a)
        where TW : struct, IWeightFormat => GemmTile<TW, Fp32Sum>(a);

    /// <summary>The GEMM with sums of <typeparamref name="TSum"/> (fp32, or float64 for <see cref="PreciseKernels.GemmF64{TW}"/>).</summary>
    internal static void GemmTile<TW, TSum>(GemmArgs a)
        where TW : struct, IWeightFormat
        where TSum : struct, IGemmSum<TSum>
    {
        var x = a.X;
        var w = a.W;
        var c = a.C;
        var s = a.Shape;
        var aTile = SharedMemory.Allocate<float>(BlockK * Ld); // [k][m]
        var bTile = SharedMemory.Allocate<float>(BlockK * Ld); // [k][n]
        int td = s.TDim;
        int tile = 4 * td;
        int tilesM = (s.M + tile - 1) / tile;
        int m0 = (Grid.IdxX % tilesM) * tile;
        int n0 = (Grid.IdxX / tilesM) * tile;
        int tid = Group.IdxX;
        int threads = Group.DimX;
        int tx = tid % td;
        int ty = tid / td;
        int k4 = s.K / 4;
        int k8 = s.K / 8;

        TSum c00 = default, c01 = default, c02 = default, c03 = default;
        TSum c10 = default, c11 = default, c12 = default, c13 = default;
        TSum c20 = default, c21 = default, c22 = default, c23 = default;
        TSum c30 = default, c31 = default, c32 = default, c33 = default;

        for (int kb = 0; kb < s.K; kb += BlockK)
        {
            // Stage X: tile rows x 4 F4 per row.
            for (int e = tid; e < tile * 4; e += threads)
            {
                int m = e / 4;
                int kq = e - m * 4;
                int gm = m0 + m;
                int gk = kb + kq * 4;
                F4 v = default;
                if (gm < s.M && gk < s.K)
                    v = x[gm * k4 + gk / 4];
                int o = kq * 4 * Ld + m;
                aTile[o] = v.X;
                aTile[o + Ld] = v.Y;
                aTile[o + 2 * Ld] = v.Z;
                aTile[o + 3 * Ld] = v.W;
            }
            // Stage W: the tile's rows at k = kb..kb+15, widened or dequantised to fp32 once.
            if (default(TW).BlockWeights == 1)
                StageSixteenBitRows<TW>(bTile, w, s, n0, kb, k8, tile, tid, threads);
            else
                StageBlockRows<TW>(bTile, w, a.Scales, s, n0, kb, tile, tid, threads);
            Group.Barrier();

            for (int kk = 0; kk < BlockK; kk++)
            {
                int ao = kk * Ld + ty;
                int bo = kk * Ld + tx;
                float a0 = aTile[ao];
                float a1 = aTile[ao + td];
                float a2 = aTile[ao + 2 * td];
                float a3 = aTile[ao + 3 * td];
                float b0 = bTile[bo];
                float b1 = bTile[bo + td];
                float b2 = bTile[bo + 2 * td];
                float b3 = bTile[bo + 3 * td];
                c00 = c00.Add(a0, b0); c01 = c01.Add(a0, b1); c02 = c02.Add(a0, b2); c03 = c03.Add(a0, b3);
                c10 = c10.Add(a1, b0); c11 = c11.Add(a1, b1); c12 = c12.Add(a1, b2); c13 = c13.Add(a1, b3);
                c20 = c20.Add(a2, b0); c21 = c21.Add(a2, b1); c22 = c22.Add(a2, b2); c23 = c23.Add(a2, b3);
                c30 = c30.Add(a3, b0); c31 = c31.Add(a3, b1); c32 = c32.Add(a3, b2); c33 = c33.Add(a3, b3);
            }
            Group.Barrier();
        }

        int r0 = m0 + ty;
        int q0 = n0 + tx;
        Store(c, s, r0, q0, td, c00, c01, c02, c03);
        Store(c, s, r0 + td, q0, td, c10, c11, c12, c13);
        Store(c, s, r0 + 2 * td, q0, td, c20, c21, c22, c23);
        Store(c, s, r0 + 3 * td, q0, td, c30, c31, c32, c33);
    }

    /// <summary>16-bit formats: tile rows x 2 chunks of 8 weights per K-step, widened once.</summary>
    static void StageSixteenBitRows<TW>(ArrayView<float> bTile, ArrayView<U4> w, GemmShape s, int n0, int kb, int k8, int tile, int tid, int threads)
        where TW : struct, IWeightFormat
    {
        for (int e = tid; e < tile * 2; e += threads)
        {
            int n = e / 2;
            int kh = e - n * 2;
            int gn = n0 + n;
            int gk = kb + kh * 8;
            W8 v = default;
            if (gn < s.N && gk < s.K)
                v = MatVecKernels.Widen<TW>(w[gn * k8 + gk / 8]);
            int o = kh * 8 * Ld + n;
            bTile[o] = v.V0;
            bTile[o + Ld] = v.V1;
            bTile[o + 2 * Ld] = v.V2;
            bTile[o + 3 * Ld] = v.V3;
            bTile[o + 4 * Ld] = v.V4;
            bTile[o + 5 * Ld] = v.V5;
            bTile[o + 6 * Ld] = v.V6;
            bTile[o + 7 * Ld] = v.V7;
        }
    }

    /// <summary>
    /// Block formats: each thread dequantises the 16 weights of one tile row at k = kb..kb+15 (Q8_0:
    /// one 128-bit chunk; Q4_0: the low or high nibbles of the row's block) into the transposed tile.
    /// </summary>
    static void StageBlockRows<TW>(ArrayView<float> bTile, ArrayView<U4> w, ArrayView<ushort> scales, GemmShape s, int n0, int kb, int tile, int tid, int threads)
        where TW : struct, IWeightFormat
    {
        for (int n = tid; n < tile; n += threads)
        {
            int gn = n0 + n;
            W8 lo = default, hi = default;
            if (gn < s.N)
                BlockSixteen<TW>(w, scales, gn, s.K, kb, out lo, out hi);
            bTile[n] = lo.V0;
            bTile[Ld + n] = lo.V1;
            bTile[2 * Ld + n] = lo.V2;
            bTile[3 * Ld + n] = lo.V3;
            bTile[4 * Ld + n] = lo.V4;
            bTile[5 * Ld + n] = lo.V5;
            bTile[6 * Ld + n] = lo.V6;
            bTile[7 * Ld + n] = lo.V7;
            bTile[8 * Ld + n] = hi.V0;
            bTile[9 * Ld + n] = hi.V1;
            bTile[10 * Ld + n] = hi.V2;
            bTile[11 * Ld + n] = hi.V3;
            bTile[12 * Ld + n] = hi.V4;
            bTile[13 * Ld + n] = hi.V5;
            bTile[14 * Ld + n] = hi.V6;
            bTile[15 * Ld + n] = hi.V7;
        }
    }

    /// <summary>
    /// Block formats: weights kb..kb+15 (kb a multiple of 16) of row <paramref name="row"/> of a
    /// [rows, <paramref name="cols"/>] matrix, dequantised with their scales (Q8_0, Q4_0: the chunk
    /// holding them and its block scale; K-quants: the format's own sub-block scales and mins).
    /// </summary>
    public static void BlockSixteen<TW>(ArrayView<U4> w, ArrayView<ushort> scales, int row, int cols, int kb, out W8 lo, out W8 hi)
        where TW : struct, IWeightFormat
    {
        if (default(TW).BlockWeights == KQuants.SuperBlock)
        {
            default(TW).SuperSixteen(w, scales, row, cols, kb, out lo, out hi);
            return;
        }
        int cw = default(TW).ChunkWeights;
        float d = Interop.IntAsFloat(scales[row * (cols / default(TW).BlockWeights) + kb / default(TW).BlockWeights]);
        default(TW).DequantizeSixteen(w[row * (cols / cw) + kb / cw], kb, d, out lo, out hi);
    }

    static void Store<TSum>(ArrayView<float> c, GemmShape s, int row, int col, int td, TSum v0, TSum v1, TSum v2, TSum v3)
        where TSum : struct, IGemmSum<TSum>
    {
        if (row >= s.M)
            return;
        int o = row * s.N;
        StoreOne(c, s, o, col, v0);
        StoreOne(c, s, o, col + td, v1);
        StoreOne(c, s, o, col + 2 * td, v2);
        StoreOne(c, s, o, col + 3 * td, v3);
    }

    static void StoreOne<TSum>(ArrayView<float> c, GemmShape s, int rowOffset, int col, TSum v)
        where TSum : struct, IGemmSum<TSum>
    {
        if (col >= s.N)
            return;
        int i = rowOffset + col;
        c[i] = s.Accumulate != 0 ? v.Result(c[i], true) : v.Result(0f, false); // C read only when accumulating
    }

    // ---- declaration, launcher, cost ------------------------------------------------------

    /// <summary>Family name (this file).</summary>
    public const string Family = "gemm";

    /// <summary><see cref="Gemm{TW}"/>, per weight format.</summary>
    public static KernelDefinition<GemmArgs> GemmKernel { get; } = KernelDefinition<GemmArgs>.Explicit("gemm", Family, Gemm<Fp16Format.Device>,
        t => new LaunchShape(t.GemmTDim * t.GemmTDim, 0, $"{t.GemmTDim}x{t.GemmTDim} threads per {4 * t.GemmTDim}x{4 * t.GemmTDim} tile"), WeightFormat.All);

    /// <summary>C[m, :] (+)= X[m, :] W^T for prompt processing (N = W's rows, K = W's columns).</summary>
    public static void Gemm(this LlamaKernels k, ArrayView<float> x, WeightMatrix w, ArrayView<float> c, int m, bool accumulate) =>
        k.LaunchGemm(GemmKernel, x, w, c, m, accumulate);

    /// <summary>Checks and launches <paramref name="kernel"/> (the gemm, or the float64-summing gemm_f64) over C[m, :] (+)= X[m, :] W^T.</summary>
    internal static void LaunchGemm(this LlamaKernels k, KernelDefinition<GemmArgs> kernel, ArrayView<float> x, WeightMatrix w, ArrayView<float> c, int m, bool accumulate)
    {
        int n = w.Rows, kDim = w.Cols;
        w.Check(kernel.Name);
        Require.Length(x, (long)m * kDim, $"{kernel.Name} x");
        Require.Length(c, (long)m * n, $"{kernel.Name} output");
        int td = k.Tuning.GemmTDim;
        int tile = 4 * td;
        int groups = ((m + tile - 1) / tile) * ((n + tile - 1) / tile);
        var args = new GemmArgs { X = x.Cast<F4>(), W = w.Chunks, Scales = w.Scales, C = c, Shape = new GemmShape { M = m, N = n, K = kDim, TDim = td, Accumulate = accumulate ? 1 : 0 } };
        k.Launch(kernel, kernel.Variant(w.Format), new KernelConfig(groups, td * td), args);
    }

    /// <summary>Minimum bytes: X and W read once, C written once (read too when accumulating).</summary>
    public static long BytesMoved(WeightFormat format, int m, int n, int k, bool accumulate) =>
        4L * m * k + format.MatrixBytes(n, k) + 4L * m * n * (accumulate ? 2 : 1);

    /// <summary>Floating-point operations.</summary>
    public static long Flops(int m, int n, int k) => 2L * m * n * k;
}

/// <summary>The gemm family: its kernel (the benchmark cases: <c>GemmBenchCases</c> in kernels/IlgpuLlama.Kernels.Bench).</summary>
sealed class GemmFamily : KernelFamily
{
    public override string Name => GemmKernels.Family;

    public override IReadOnlyList<IKernelDefinition> Kernels => [GemmKernels.GemmKernel];
}
