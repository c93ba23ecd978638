using ILGPU;
using IlgpuLlama.Kernels;
using IlgpuLlama.Model;

namespace IlgpuLlama.Engine;

/// <summary>
/// Llama on an ILGPU accelerator: weights, preallocated KV cache and workspace, and the forward
/// pass as a readable list of kernel launches. Prefill runs whole prompts (GEMM + causal
/// attention); decode runs one token per sequence (GEMV + split attention). Nothing is allocated
/// on the device after construction. Each call takes all of its inputs and returns its outputs:
/// <see cref="Prefill(IReadOnlyList{SequenceInput}, SelectMode)"/> and <see cref="Decode(IReadOnlyList{DecodeRow}, SelectMode)"/> select the next token of every sequence.
/// </summary>
/// <remarks>
/// This file is the forward pass: in it <c>act[buf.X]</c> is the view of workspace buffer X
/// (<see cref="WorkspacePlan"/>) and <c>lw</c> a layer's weights. Loading, limits and memory are in
/// LlamaModel.Load.cs; the public steps (prefill, decode, read-back, recorded graphs) in
/// LlamaModel.Steps.cs; what the device holds of each step's inputs in <see cref="DeviceInputs"/>.
/// </remarks>
public sealed partial class LlamaModel : IDisposable
{
    /// <summary>The prefill forward pass over the first <paramref name="n"/> rows of the prefill inputs.</summary>
    void EnqueuePrefillLayers(int n)
    {
        var c = Config;
        var act = Workspace;
        var k = Kernels;
        var tokens = act[buf.PrefillTokens];
        var positions = act[buf.PrefillPositions];
        var slots = act[buf.PrefillSlots];

        k.Embedding(Weights.Embedding.Matrix, tokens, act[buf.X], n);
        k.MarkSeen(tokens, slots, act[buf.Seen], n, c.VocabSize);
        for (int l = 0; l < c.NumHiddenLayers; l++)
            EnqueueLayer(l, n, slots, positions, 1, prefill: true);
    }

    /// <summary>
    /// One layer over rows 0..n-1 of the residual act.x (row i at positions[i] of cache slot
    /// slots[i]) with one matmul per projection: the prefill GEMM, or with float64 accumulation
    /// (<see cref="Accumulation.Fp64"/>, which runs decode steps through here too) the float64 GEMM
    /// for a prompt and the float64 matmul for a decode step.
    /// </summary>
    void EnqueueLayer(int l, int n, ArrayView<int> slots, ArrayView<int> positions, int attentionSplits, bool prefill)
    {
        var act = Workspace;
        var k = Kernels;
        var lw = Weights.Layers[l];
        // attention block: x += o_proj(attention(rope(q), cache(rope(k), v)))
        Norm(act[buf.X], lw.InputNorm, act[buf.Xb], n);
        Project(act[buf.Xb], lw.Q.Matrix, act[buf.Q], n, false, prefill);
        Project(act[buf.Xb], lw.K.Matrix, act[buf.K], n, false, prefill);
        Project(act[buf.Xb], lw.V.Matrix, act[buf.V], n, false, prefill);
        k.Rope(act[buf.Q], act[buf.K], positions, act[buf.RopeTable], n, attention);
        k.KvAppend(act[buf.K], act[buf.V], act[buf.KCache[l]], act[buf.VCache[l]], slots, positions, n, attention.Cache);
        k.Attention(AttentionBuffers(l, slots, positions), n, attentionSplits, attention, float64Scores: Precise);
        Project(act[buf.AttentionOut], lw.O.Matrix, act[buf.X], n, true, prefill);
        // MLP block: x += down(silu(gate(xb)) * up(xb))
        Norm(act[buf.X], lw.PostAttentionNorm, act[buf.Xb], n);
        Project(act[buf.Xb], lw.Gate.Matrix, act[buf.Gate], n, false, prefill);
        Project(act[buf.Xb], lw.Up.Matrix, act[buf.Up], n, false, prefill);
        k.SwiGlu(act[buf.Gate], act[buf.Up], n * Config.IntermediateSize);
        Project(act[buf.Gate], lw.Down.Matrix, act[buf.X], n, true, prefill);
    }

    /// <summary>Whether matmuls and RMSNorm accumulate in float64 (<see cref="EngineOptions.Accumulation"/>).</summary>
    bool Precise => Options.Accumulation == Accumulation.Fp64;

    /// <summary>y = rmsnorm(x) * weight over <paramref name="rows"/> rows of the hidden size, in fp32 or (precise) float64.</summary>
    void Norm(ArrayView<float> x, DeviceWeight weight, ArrayView<float> y, int rows)
    {
        if (Precise)
            Kernels.RmsNormF64(x, weight.Vector, y, rows, Config.HiddenSize, Config.RmsNormEps);
        else
            Kernels.RmsNorm(x, weight.Vector, y, rows, Config.HiddenSize, eps);
    }

    /// <summary>y (+)= x W^T over <paramref name="rows"/> rows: the prefill GEMM, or (precise) the float64 GEMM for a prompt and the float64 matmul (one warp per weight row) for a decode step.</summary>
    void Project(ArrayView<float> x, WeightMatrix w, ArrayView<float> y, int rows, bool accumulate, bool prefill)
    {
        if (!Precise)
            Kernels.Gemm(x, w, y, rows, accumulate);
        else if (prefill)
            Kernels.GemmF64(x, w, y, rows, accumulate);
        else
            Kernels.MatMulF64(x, w, y, rows, accumulate);
    }

    AttentionBuffers AttentionBuffers(int layer, ArrayView<int> slots, ArrayView<int> positions)
    {
        var act = Workspace;
        return new AttentionBuffers(act[buf.Q], act[buf.KCache[layer]], act[buf.VCache[layer]], slots, positions, act[buf.AttentionOut],
            act[buf.AttentionPartialAcc], act[buf.AttentionPartialMl], act[buf.AttentionCounters]);
    }

    /// <summary>The decode forward pass: a readable list of launches, every per-step value read from device memory.</summary>
    void EnqueueDecodeStep(int b, SelectShape shape)
    {
        var c = Config;
        var act = Workspace;
        int h = c.HiddenSize;
        var k = Kernels;
        var tokens = act[buf.StepTokens];
        var positions = act[buf.StepPositions];
        var slots = act[buf.StepSlots];

        k.MarkSeen(tokens, slots, act[buf.Seen], b, c.VocabSize);
        k.Embedding(Weights.Embedding.Matrix, tokens, act[buf.X], b);
        for (int l = 0; l < c.NumHiddenLayers; l++)
        {
            if (Precise)
            {
                // Float64 accumulation: the prefill layer's launches over one row per sequence.
                EnqueueLayer(l, b, slots, positions, Plan.Shape.AttentionSplits, prefill: false);
                continue;
            }
            var lw = Weights.Layers[l];
            if (Variant.OneLaunchPerLayer)
            {
                // The same five steps as below, as tasks of one launch (DecodeLayerKernels).
                var weights = new DecodeLayerWeights(lw.Qkv, lw.O.Matrix, lw.Gate.Matrix, lw.Up.Matrix, lw.Down.Matrix,
                    new FusedNorm(lw.InputNorm.Vector, eps), new FusedNorm(lw.PostAttentionNorm.Vector, eps));
                var buffers = new DecodeLayerBuffers(act[buf.X], act[buf.RopeTable], AttentionBuffers(l, slots, positions), act[buf.Gate], act[buf.PersistentSync]);
                k.DecodeLayer(weights, buffers, b, Plan.Shape.AttentionSplits, attention);
                continue;
            }
            var (xn, norm) = NormedInput(lw.InputNorm, b);
            k.MatVecQkvRope(lw.Qkv, xn, act[buf.Q], act[buf.KCache[l]], act[buf.VCache[l]], act[buf.RopeTable], slots, positions, b, attention, norm);
            k.Attention(AttentionBuffers(l, slots, positions), b, Plan.Shape.AttentionSplits, attention);
            k.MatVec(lw.O.Matrix, act[buf.AttentionOut], act[buf.X], b, true);
            (xn, norm) = NormedInput(lw.PostAttentionNorm, b);
            k.MatVecSwiGlu(lw.Gate.Matrix, lw.Up.Matrix, xn, act[buf.Gate], b, norm);
            k.MatVec(lw.Down.Matrix, act[buf.Gate], act[buf.X], b, true);
        }
        var (xf, finalNorm) = NormedInput(Weights.FinalNorm, b);
        LmHead(xf, b, finalNorm, inputPadded: true);
        EnqueueSelect(b, shape);
        k.AddScalar(positions, b, 1);
    }

    /// <summary>
    /// The input of a matvec that consumes rmsnorm(x) of the residual x: x itself with the norm
    /// fused into the matvec, or (baseline) act.xb after an RMSNorm launch.
    /// </summary>
    (ArrayView<float> Input, FusedNorm? Norm) NormedInput(DeviceWeight normWeight, int rows)
    {
        var act = Workspace;
        if (Variant.FuseNorms)
            return (act[buf.X], new FusedNorm(normWeight.Vector, eps));
        Norm(act[buf.X], normWeight, act[buf.Xb], rows);
        return (act[buf.Xb], null);
    }

    /// <summary>
    /// Logits rows 0..rows-1 of <paramref name="input"/> (normed, or raw with the final norm fused).
    /// The matvec reads whole tiles of 4 input rows beyond 4; where <paramref name="input"/> may hold
    /// fewer (last-token hidden states), the partial tile is launched on its own.
    /// </summary>
    void LmHead(ArrayView<float> input, int rows, FusedNorm? norm, bool inputPadded)
    {
        var act = Workspace;
        int h = Config.HiddenSize, vocab = Config.VocabSize;
        if (Precise)
        {
            // Float64 accumulation runs the baseline variant (checked at load): the final norm is never fused here.
            if (norm is not null)
                throw new InvalidOperationException("float64 accumulation's LM head takes a normed input; a fused final norm reached it");
            Kernels.MatMulF64(input, Weights.LmHead.Matrix, act[buf.Logits], rows, false);
            return;
        }
        int whole = inputPadded || rows <= BatchWidth.Max ? rows : rows / BatchWidth.Max * BatchWidth.Max;
        Kernels.MatVec(Weights.LmHead.Matrix, input, act[buf.Logits], whole, false, norm: norm);
        if (whole < rows)
            Kernels.MatVec(Weights.LmHead.Matrix, input.SubView((long)whole * h), act[buf.Logits].SubView((long)whole * vocab), rows - whole, false, norm: norm);
    }

    /// <summary>
    /// Selection kernels over logits rows 0..rows-1 (rows map to cache slots through the decode
    /// slots); each row's temperature and penalty are read from the device (<see cref="DeviceInputs.SetSelection"/>).
    /// </summary>
    void EnqueueSelect(int rows, SelectShape shape)
    {
        var act = Workspace;
        int vocab = Config.VocabSize;
        var invTemperature = act[buf.SelectInvTemperature].SubView(0, rows);
        if (shape.Penalty)
            Kernels.RepetitionPenalty(act[buf.Logits], act[buf.StepSlots], act[buf.Seen], act[buf.SelectPenalty].SubView(0, rows), rows, vocab);
        // Greedy writes the argmax straight into the next step's input tokens.
        var reduce = new LogitsReduceBuffers(act[buf.ReducePartialMax], act[buf.ReducePartialSum], act[buf.ReducePartialIdx], act[buf.ReduceCounters],
            shape.Greedy ? act[buf.StepTokens] : act[buf.Argmax], act[buf.MaxLogit], act[buf.SumExp]);
        Kernels.LogitsReduce(act[buf.Logits], reduce, invTemperature, rows, vocab);
        if (!shape.Greedy)
            Kernels.TopK(act[buf.Logits], new TopKBuffers(act[buf.TopKPartialVal], act[buf.TopKPartialIdx], act[buf.TopKCounters], act[buf.TopKVal], act[buf.TopKIdx]), rows, vocab, shape.Candidates);
    }
}
