using System.Numerics;
using IlgpuLlama.Kernels;
using IlgpuLlama.Kernels.Reference;
using IlgpuLlama.Model;
using IlgpuLlama.Safetensors;

namespace IlgpuLlama.Tests.Model;

/// <summary>
/// A plain float64 Llama 3 forward pass (Hugging Face LlamaForCausalLM semantics: RMSNorm, rotate_half
/// RoPE with llama3 frequencies, causal GQA attention, SwiGLU, tied or untied LM head) over a model
/// directory's weights, optionally stored in a weight format first: the matrices are then the values
/// that format holds (rounded to 16 bits, or quantised and dequantised as ggml defines it). It is
/// checked against the independent float64 golden reference, then serves as the reference of the
/// quantised models. <see cref="Logits{T}"/> runs the same pass in another arithmetic (float32: what
/// an fp32 engine could at best reach, given exact weights and an unrounded KV cache).
/// </summary>
public sealed class ReferenceForward
{
    readonly LlamaConfig config;
    readonly Dictionary<string, double[]> weights = new();

    public ReferenceForward(string modelDir, WeightFormat? matrixFormat = null)
    {
        config = LlamaConfig.FromDirectory(modelDir);
        using var source = SafetensorsModel.Open(modelDir);
        foreach (var (name, shape) in config.ExpectedTensors())
        {
            var t = source.GetTensor(name);
            var values = new float[t.ElementCount];
            DTypeConversion.ToF32(source.GetSpan(t, 0, (int)t.ByteLength), t.DType, values);
            weights[name] = shape.Length == 2 && matrixFormat is not null
                ? HostMatrix.From(matrixFormat, values, (int)shape[0], (int)shape[1]).Dequantized()
                : Array.ConvertAll(values, v => (double)v);
        }
        if (config.TieWordEmbeddings)
            weights[LlamaConfig.LmHeadName] = weights["model.embed_tokens.weight"];
    }

    /// <summary>A forward pass over weights given as fp32 values by engine tensor name (matrices optionally stored in <paramref name="matrixFormat"/> first).</summary>
    public ReferenceForward(LlamaConfig config, IReadOnlyDictionary<string, float[]> values, WeightFormat? matrixFormat = null)
        : this(config, values, _ => matrixFormat)
    {
    }

    /// <summary>As the other overload, each matrix stored first in <paramref name="formatOf"/>'s format for it (null: as given).</summary>
    public ReferenceForward(LlamaConfig config, IReadOnlyDictionary<string, float[]> values, Func<string, WeightFormat?> formatOf)
    {
        this.config = config;
        foreach (var (name, shape) in config.ExpectedTensors())
        {
            var v = values[name];
            weights[name] = shape.Length == 2 && formatOf(name) is { } f
                ? HostMatrix.From(f, v, (int)shape[0], (int)shape[1]).Dequantized()
                : Array.ConvertAll(v, x => (double)x);
        }
        if (config.TieWordEmbeddings)
            weights[LlamaConfig.LmHeadName] = weights["model.embed_tokens.weight"];
    }

    readonly Dictionary<(Type, string), Array> converted = new();

    /// <summary>A weight's values in <typeparamref name="T"/> (converted once).</summary>
    T[] W<T>(string name)
        where T : IFloatingPointIeee754<T>
    {
        if (typeof(T) == typeof(double))
            return (T[])(object)weights[name];
        lock (converted)
        {
            if (!converted.TryGetValue((typeof(T), name), out var a))
                converted[(typeof(T), name)] = a = Array.ConvertAll(weights[name], T.CreateChecked);
            return (T[])a;
        }
    }

    static T[] MatVec<T>(T[] w, T[] x, int rows, int cols)
        where T : IFloatingPointIeee754<T>
    {
        var y = new T[rows];
        Parallel.For(0, rows, r =>
        {
            T s = T.Zero;
            for (int c = 0; c < cols; c++)
                s += w[(long)r * cols + c] * x[c];
            y[r] = s;
        });
        return y;
    }

    T[] RmsNorm<T>(T[] x, string weight)
        where T : IFloatingPointIeee754<T>
    {
        var g = W<T>(weight);
        T ss = T.Zero;
        foreach (var v in x)
            ss += v * v;
        T inv = T.One / T.Sqrt(ss / T.CreateChecked(x.Length) + T.CreateChecked(config.RmsNormEps));
        return x.Select((v, i) => v * inv * g[i]).ToArray();
    }

    /// <summary>rotate_half RoPE; the angle's cosine and sine in float64, rounded to <typeparamref name="T"/> (as the engine's table).</summary>
    void Rope<T>(T[] v, int heads, int pos, double[] invFreq)
        where T : IFloatingPointIeee754<T>
    {
        int hd = config.HeadDim, half = hd / 2;
        for (int h = 0; h < heads; h++)
        {
            for (int i = 0; i < half; i++)
            {
                double angle = pos * invFreq[i];
                T cos = T.CreateChecked(Math.Cos(angle)), sin = T.CreateChecked(Math.Sin(angle));
                T a = v[h * hd + i], b = v[h * hd + i + half];
                v[h * hd + i] = a * cos - b * sin;
                v[h * hd + i + half] = b * cos + a * sin;
            }
        }
    }

    /// <summary>Logits [tokens, vocab] of every position (row t predicts token t + 1), in float64.</summary>
    public double[][] Logits(IReadOnlyList<int> tokens) => Logits<double>(tokens);

    /// <summary>Logits [tokens, vocab] of every position, every value and operation in <typeparamref name="T"/> (sums in order).</summary>
    public T[][] Logits<T>(IReadOnlyList<int> tokens)
        where T : IFloatingPointIeee754<T>
    {
        var c = config;
        int h = c.HiddenSize, hd = c.HeadDim, heads = c.NumAttentionHeads, kvHeads = c.NumKeyValueHeads, inter = c.IntermediateSize;
        var invFreq = c.RopeInverseFrequencies();
        var keys = new List<T[]>[c.NumHiddenLayers];
        var values = new List<T[]>[c.NumHiddenLayers];
        for (int l = 0; l < c.NumHiddenLayers; l++)
        {
            keys[l] = [];
            values[l] = [];
        }
        var result = new T[tokens.Count][];
        for (int pos = 0; pos < tokens.Count; pos++)
        {
            var emb = W<T>("model.embed_tokens.weight");
            var x = Enumerable.Range(0, h).Select(i => emb[(long)tokens[pos] * h + i]).ToArray();
            for (int l = 0; l < c.NumHiddenLayers; l++)
            {
                string p = $"model.layers.{l}.";
                var xn = RmsNorm(x, p + "input_layernorm.weight");
                var q = MatVec(W<T>(p + "self_attn.q_proj.weight"), xn, c.QDim, h);
                var k = MatVec(W<T>(p + "self_attn.k_proj.weight"), xn, c.KvDim, h);
                var v = MatVec(W<T>(p + "self_attn.v_proj.weight"), xn, c.KvDim, h);
                Rope(q, heads, pos, invFreq);
                Rope(k, kvHeads, pos, invFreq);
                keys[l].Add(k);
                values[l].Add(v);
                var attn = new T[c.QDim];
                for (int head = 0; head < heads; head++)
                {
                    int kvh = head / (heads / kvHeads);
                    var scores = new T[pos + 1];
                    for (int t = 0; t <= pos; t++)
                    {
                        T s = T.Zero;
                        for (int d = 0; d < hd; d++)
                            s += q[head * hd + d] * keys[l][t][kvh * hd + d];
                        scores[t] = s / T.Sqrt(T.CreateChecked(hd));
                    }
                    T max = scores.Max()!;
                    var e = scores.Select(s => T.Exp(s - max)).ToArray();
                    T sum = T.Zero;
                    foreach (var p1 in e)
                        sum += p1;
                    for (int d = 0; d < hd; d++)
                    {
                        T acc = T.Zero;
                        for (int t = 0; t <= pos; t++)
                            acc += e[t] * values[l][t][kvh * hd + d];
                        attn[head * hd + d] = acc / sum;
                    }
                }
                var o = MatVec(W<T>(p + "self_attn.o_proj.weight"), attn, h, c.QDim);
                for (int i = 0; i < h; i++)
                    x[i] += o[i];
                xn = RmsNorm(x, p + "post_attention_layernorm.weight");
                var gate = MatVec(W<T>(p + "mlp.gate_proj.weight"), xn, inter, h);
                var up = MatVec(W<T>(p + "mlp.up_proj.weight"), xn, inter, h);
                var act = gate.Select((g, i) => g / (T.One + T.Exp(-g)) * up[i]).ToArray();
                var down = MatVec(W<T>(p + "mlp.down_proj.weight"), act, h, inter);
                for (int i = 0; i < h; i++)
                    x[i] += down[i];
            }
            result[pos] = MatVec(W<T>(LlamaConfig.LmHeadName), RmsNorm(x, "model.norm.weight"), c.VocabSize, h);
        }
        return result;
    }
}
