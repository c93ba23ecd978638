using ILGPU;
using ILGPU.Runtime;
using IlgpuLlama.Kernels;
using IlgpuLlama.Kernels.Reference;

namespace IlgpuLlama.Tests.Kernels;

/// <summary>
/// The persistent decode layer against the five fused-norm launches it replaces, on the same inputs,
/// at warps of 1, 2, 4 and 32 (multi-warp groups at 2 and 4) with 1, 2 and 7 persistent groups and
/// batches of 1 to 4 and 6: the residual after the layer and the appended K/V agree (bit for bit at
/// one lane, where every task runs with the per-operation group size), splits merge, and the task
/// counters are back at zero after every launch.
/// </summary>
public sealed class DecodeLayerTests(KernelTestContext ctx) : IClassFixture<KernelTestContext>
{
    [Theory]
    [InlineData(1, 2, 6, "fp16")]
    [InlineData(1, 7, 3, "bf16")]
    [InlineData(2, 7, 1, "fp16")]
    [InlineData(2, 1, 4, "bf16")]
    [InlineData(4, 2, 2, "fp16")]
    [InlineData(32, 7, 2, "fp16")]
    public void One_launch_equals_the_five_it_replaces(int warp, int groups, int batch, string dtype)
    {
        var storage = TestData.Format(dtype);
        var shared = ctx.Kernels(warp);
        var k = new LlamaKernels(shared.Accelerator, shared.Tuning with { PersistentGroups = groups });
        var rng = new Random(warp * 1000 + groups * 10 + batch);
        const int heads = 2, kvHeads = 1, headDim = 16, hidden = 32, inter = 48, maxSeq = 20, slotCount = 7;
        var s = new AttentionShape(heads, kvHeads, headDim, maxSeq);
        int splits = AttentionKernels.Splits(maxSeq, k.Tuning);
        var rope = RopeTable.Build(TestData.Llama3InverseFrequencies(headDim, 500000, 32, 1, 4, 64), maxSeq);
        int[] slots = new[] { 4, 0, 2, 6, 1, 3 }[..batch];
        int[] positions = new[] { 19, 0, 7, 12, 3, 18 }[..batch];
        int padded = MatVecKernels.PaddedBatch(batch);
        var x0 = TestData.Floats(rng, padded * hidden, 3.0);
        int cacheValues = slotCount * kvHeads * maxSeq * headDim;
        var kCache = TestData.KvCache(rng, cacheValues, s.Cache);
        var vCache = TestData.KvCache(rng, cacheValues, s.Cache);

        var a = k.Accelerator;
        var owned = new List<IDisposable>();
        MemoryBuffer1D<T, Stride1D.Dense> Buf<T>(T[] data) where T : unmanaged
        {
            var b = a.Allocate1D(data);
            owned.Add(b);
            return b;
        }
        ArrayView<T> Up<T>(T[] data) where T : unmanaged => Buf(data).View;
        ArrayView<T> New<T>(long n) where T : unmanaged => Up(new T[n]);
        WeightMatrix W(int rows, int cols) => WeightMatrix.Of(storage, Up(TestData.Weights(rng, rows * cols, storage)), rows, cols);
        try
        {
            var qkv = new QkvWeights(W(s.QDim, hidden), W(s.KvDim, hidden), W(s.KvDim, hidden));
            var o = W(hidden, s.QDim);
            var gate = W(inter, hidden);
            var up = W(inter, hidden);
            var down = W(hidden, inter);
            var inputNorm = new FusedNorm(new WeightVector(storage, Up(TestData.Weights(rng, hidden, storage, 1.5))), 1e-5f);
            var postNorm = new FusedNorm(new WeightVector(storage, Up(TestData.Weights(rng, hidden, storage, 1.5))), 1e-5f);
            var ropeb = Up(rope);
            var slotb = Up(slots);
            var posb = Up(positions);
            var q = New<float>(padded * s.QDim);
            var attnOut = New<float>(padded * s.QDim);
            var acc = New<float>((long)batch * heads * splits * headDim);
            var ml = New<float>((long)batch * heads * splits * 2);
            var countersBuf = Buf(new int[batch * kvHeads]);
            var counters = countersBuf.View;
            var hiddenAct = New<float>(padded * inter);
            var syncBuf = Buf(new int[DecodeLayerKernels.SyncInts]);
            var sync = syncBuf.View;

            var xRefBuf = Buf(x0);
            var kRefBuf = Buf(kCache);
            var vRefBuf = Buf(vCache);
            ArrayView<float> xRef = xRefBuf.View;
            ArrayView<ushort> kRef = kRefBuf.View, vRef = vRefBuf.View;
            k.MatVecQkvRope(qkv, xRef, q, kRef, vRef, ropeb, slotb, posb, batch, s, inputNorm);
            k.Attention(new AttentionBuffers(q, kRef, vRef, slotb, posb, attnOut, acc, ml, counters), batch, splits, s);
            k.MatVec(o, attnOut, xRef, batch, true);
            k.MatVecSwiGlu(gate, up, xRef, hiddenAct, batch, postNorm);
            k.MatVec(down, hiddenAct, xRef, batch, true);

            var xBuf = Buf(x0);
            var kcBuf = Buf(kCache);
            var vcBuf = Buf(vCache);
            ArrayView<float> x = xBuf.View;
            ArrayView<ushort> kc = kcBuf.View, vc = vcBuf.View;
            var weights = new DecodeLayerWeights(qkv, o, gate, up, down, inputNorm, postNorm);
            var buffers = new DecodeLayerBuffers(x, ropeb, new AttentionBuffers(q, kc, vc, slotb, posb, attnOut, acc, ml, counters), hiddenAct, sync);
            for (int launch = 0; launch < 2; launch++)
            {
                // The second launch starts from counters the first one left: they must be zero again.
                if (launch == 1)
                {
                    HostCopy.Upload(x, x0);
                    HostCopy.Upload(kc, kCache);
                    HostCopy.Upload(vc, vCache);
                }
                k.DecodeLayer(weights, buffers, batch, splits, s);
                a.Synchronize();
                Assert.All(syncBuf.GetAsArray1D(), v => Assert.Equal(0, v));
                Assert.All(countersBuf.GetAsArray1D(), v => Assert.Equal(0, v));
                var expected = xRefBuf.GetAsArray1D();
                var actual = xBuf.GetAsArray1D();
                if (warp == 1)
                {
                    Assert.Equal(expected, actual);
                    Assert.Equal(kRefBuf.GetAsArray1D(), kcBuf.GetAsArray1D());
                    Assert.Equal(vRefBuf.GetAsArray1D(), vcBuf.GetAsArray1D());
                }
                else
                {
                    TestData.AssertClose("residual", actual[..(batch * hidden)], Array.ConvertAll(expected[..(batch * hidden)], v => (double)v), 1e-5, 1e-4);
                    TestData.AssertClose("k cache", Array.ConvertAll(TestData.KvValues(kcBuf.GetAsArray1D(), s.Cache), d => (float)d), TestData.KvValues(kRefBuf.GetAsArray1D(), s.Cache), 1e-3, 1e-3);
                    TestData.AssertClose("v cache", Array.ConvertAll(TestData.KvValues(vcBuf.GetAsArray1D(), s.Cache), d => (float)d), TestData.KvValues(vRefBuf.GetAsArray1D(), s.Cache), 1e-3, 1e-3);
                }
            }
        }
        finally
        {
            foreach (var b in owned)
                b.Dispose();
        }
    }
}
