using ILGPU;
using ILGPU.Runtime;
using IlgpuLlama.Device;
using IlgpuLlama.Model;

namespace IlgpuLlama.Engine;

/// <summary>
/// The activation workspace and the KV cache: every buffer the forward pass touches, allocated
/// once at load through the tracking allocator (names act.* and kv_cache.{k,v}.layerN). Decode
/// uses the first B rows of the prefill-sized buffers. Sizes follow MemoryPlan's derivation.
/// </summary>
public sealed class Workspace : IDisposable
{
    readonly List<IDisposable> owned = [];

    /// <summary>Allocates everything for <paramref name="config"/> at <paramref name="shape"/>.</summary>
    public Workspace(DeviceAllocator allocator, LlamaConfig config, WorkspaceShape shape)
    {
        Shape = shape;
        long t = shape.PrefillTokens, b = shape.MaxBatch;
        int h = config.HiddenSize, q = config.QDim, kv = config.KvDim, inter = config.IntermediateSize, vocab = config.VocabSize;
        try
        {
            DeviceBuffer<T> A<T>(string name, params long[] dims)
                where T : unmanaged
            {
                var buffer = allocator.Allocate<T>(name, MemoryCategory.Activations, dims);
                owned.Add(buffer);
                return buffer;
            }

            X = A<float>("act.x", t, h);
            Xb = A<float>("act.xb", t, h);
            Q = A<float>("act.q", t, q);
            AttentionOut = A<float>("act.attn_out", t, q);
            K = A<float>("act.k", t, kv);
            V = A<float>("act.v", t, kv);
            Gate = A<float>("act.gate", t, inter);
            Up = A<float>("act.up", t, inter);
            Logits = A<float>("act.logits", b, vocab);
            LastHidden = A<float>("act.last_hidden", b, h);
            RopeTable = A<float>("act.rope_table", shape.MaxSeq, config.HeadDim / 2, 2);
            AttentionPartialAcc = A<float>("act.attn_partial_acc", b, config.NumAttentionHeads, shape.AttentionSplits, config.HeadDim);
            AttentionPartialMl = A<float>("act.attn_partial_ml", b, config.NumAttentionHeads, shape.AttentionSplits, 2);
            AttentionCounters = A<int>("act.attn_counters", b, config.NumKeyValueHeads);
            PrefillTokens = A<int>("act.prefill_tokens", t);
            PrefillPositions = A<int>("act.prefill_positions", t);
            PrefillSlots = A<int>("act.prefill_slots", t);
            LastRows = A<int>("act.last_rows", b);
            StepTokens = A<int>("act.step_tokens", b);
            StepPositions = A<int>("act.step_positions", b);
            StepSlots = A<int>("act.step_slots", b);
            ReducePartialMax = A<float>("act.reduce_partial_max", b, shape.LogitsParts);
            ReducePartialSum = A<float>("act.reduce_partial_sum", b, shape.LogitsParts);
            ReducePartialIdx = A<int>("act.reduce_partial_idx", b, shape.LogitsParts);
            ReduceCounters = A<int>("act.reduce_counters", b);
            Argmax = A<int>("act.argmax", b);
            MaxLogit = A<float>("act.max_logit", b);
            SumExp = A<float>("act.sum_exp", b);
            TopKPartialVal = A<float>("act.topk_partial_val", b, shape.TopKParts, shape.TopKCapacity);
            TopKPartialIdx = A<int>("act.topk_partial_idx", b, shape.TopKParts, shape.TopKCapacity);
            TopKCounters = A<int>("act.topk_counters", b);
            TopKVal = A<float>("act.topk_val", b, shape.TopKCapacity);
            TopKIdx = A<int>("act.topk_idx", b, shape.TopKCapacity);
            Seen = A<byte>("act.seen", b, vocab);

            KCache = new DeviceBuffer<ushort>[config.NumHiddenLayers];
            VCache = new DeviceBuffer<ushort>[config.NumHiddenLayers];
            for (int l = 0; l < config.NumHiddenLayers; l++)
            {
                KCache[l] = allocator.Allocate<ushort>($"kv_cache.k.layer{l}", MemoryCategory.KvCache, b, config.NumKeyValueHeads, shape.MaxSeq, config.HeadDim);
                owned.Add(KCache[l]);
                VCache[l] = allocator.Allocate<ushort>($"kv_cache.v.layer{l}", MemoryCategory.KvCache, b, config.NumKeyValueHeads, shape.MaxSeq, config.HeadDim);
                owned.Add(VCache[l]);
            }

            // Completion counters must start at zero: the kernels leave them at zero after each launch.
            AttentionCounters.View.MemSetToZero();
            ReduceCounters.View.MemSetToZero();
            TopKCounters.View.MemSetToZero();
            Seen.View.MemSetToZero();
        }
        catch
        {
            Dispose();
            throw;
        }
    }

    /// <summary>Sizes the workspace was built for.</summary>
    public WorkspaceShape Shape { get; }

#pragma warning disable CS8618 // assigned in the constructor's try block
    /// <summary>Residual stream [T, hidden].</summary>
    public DeviceBuffer<float> X { get; }
    /// <summary>Normed residual [T, hidden].</summary>
    public DeviceBuffer<float> Xb { get; }
    /// <summary>Queries [T, heads x head_dim].</summary>
    public DeviceBuffer<float> Q { get; }
    /// <summary>Attention output [T, heads x head_dim].</summary>
    public DeviceBuffer<float> AttentionOut { get; }
    /// <summary>Keys before the cache [T, kv_dim] (prefill).</summary>
    public DeviceBuffer<float> K { get; }
    /// <summary>Values before the cache [T, kv_dim] (prefill).</summary>
    public DeviceBuffer<float> V { get; }
    /// <summary>MLP gate, then silu(gate) x up [T, intermediate].</summary>
    public DeviceBuffer<float> Gate { get; }
    /// <summary>MLP up [T, intermediate] (prefill).</summary>
    public DeviceBuffer<float> Up { get; }
    /// <summary>Logits of at most B rows [B, vocab].</summary>
    public DeviceBuffer<float> Logits { get; }
    /// <summary>Residual of each sequence's last prompt token [B, hidden].</summary>
    public DeviceBuffer<float> LastHidden { get; }
    /// <summary>cos/sin table [max_seq, head_dim/2, 2].</summary>
    public DeviceBuffer<float> RopeTable { get; }
    public DeviceBuffer<float> AttentionPartialAcc { get; }
    public DeviceBuffer<float> AttentionPartialMl { get; }
    public DeviceBuffer<int> AttentionCounters { get; }
    public DeviceBuffer<int> PrefillTokens { get; }
    public DeviceBuffer<int> PrefillPositions { get; }
    public DeviceBuffer<int> PrefillSlots { get; }
    public DeviceBuffer<int> LastRows { get; }
    /// <summary>Decode input tokens [B] (greedy decoding writes the next ones here on the device).</summary>
    public DeviceBuffer<int> StepTokens { get; }
    /// <summary>Decode positions [B], advanced on the device after each step.</summary>
    public DeviceBuffer<int> StepPositions { get; }
    /// <summary>Cache slot of each decode row [B].</summary>
    public DeviceBuffer<int> StepSlots { get; }
    public DeviceBuffer<float> ReducePartialMax { get; }
    public DeviceBuffer<float> ReducePartialSum { get; }
    public DeviceBuffer<int> ReducePartialIdx { get; }
    public DeviceBuffer<int> ReduceCounters { get; }
    public DeviceBuffer<int> Argmax { get; }
    public DeviceBuffer<float> MaxLogit { get; }
    public DeviceBuffer<float> SumExp { get; }
    public DeviceBuffer<float> TopKPartialVal { get; }
    public DeviceBuffer<int> TopKPartialIdx { get; }
    public DeviceBuffer<int> TopKCounters { get; }
    public DeviceBuffer<float> TopKVal { get; }
    public DeviceBuffer<int> TopKIdx { get; }
    /// <summary>Repetition-penalty flags [slots, vocab].</summary>
    public DeviceBuffer<byte> Seen { get; }
    /// <summary>K cache per layer [slots, kv_heads, max_seq, head_dim] fp16.</summary>
    public DeviceBuffer<ushort>[] KCache { get; }
    /// <summary>V cache per layer, same layout.</summary>
    public DeviceBuffer<ushort>[] VCache { get; }
#pragma warning restore CS8618

    /// <inheritdoc/>
    public void Dispose()
    {
        foreach (var d in owned)
            d.Dispose();
        owned.Clear();
    }
}
