using System.Runtime.InteropServices;
using System.Text;
using IlgpuLlama.Gguf;
using IlgpuLlama.Kernels;
using IlgpuLlama.Model;
using IlgpuLlama.Safetensors;
using IlgpuLlama.Text;

namespace IlgpuLlama.Tests.Gguf;

/// <summary>
/// A small GGUF writer for the tests (never part of the library): metadata and tensors as the spec
/// lays them out (v2/v3, little-endian, data aligned to general.alignment). Every field can be set to a
/// wrong value so that the malformed-file sweep can build its cases from a valid file.
/// </summary>
internal sealed class GgufWriter
{
    public uint Magic = GgufFile.Magic;
    public uint Version = 3;
    public int Alignment = GgufFile.DefaultAlignment;

    /// <summary>Overrides of the written counts (null: the true ones).</summary>
    public ulong? TensorCountOverride, KvCountOverride;

    public readonly List<(string Key, GgufValueType Type, object Value)> Metadata = [];
    public readonly List<Tensor> Tensors = [];

    public sealed class Tensor(string name, GgmlType type, long[] dims, byte[] data)
    {
        public string Name = name;
        public GgmlType Type = type;
        public long[] Dims = dims;
        public byte[] Data = data;
        /// <summary>The data offset to write instead of the true one.</summary>
        public ulong? OffsetOverride;
    }

    public GgufWriter Add(string key, object value)
    {
        var type = value switch
        {
            string => GgufValueType.String,
            uint => GgufValueType.UInt32,
            int => GgufValueType.Int32,
            float => GgufValueType.Float32,
            bool => GgufValueType.Bool,
            ulong => GgufValueType.UInt64,
            long => GgufValueType.Int64,
            double => GgufValueType.Float64,
            byte => GgufValueType.UInt8,
            ushort => GgufValueType.UInt16,
            Array => GgufValueType.Array,
            _ => throw new ArgumentException($"no GGUF type for {value.GetType()}"),
        };
        Metadata.Add((key, type, value));
        return this;
    }

    public GgufWriter Set(string key, object value)
    {
        Metadata.RemoveAll(m => m.Key == key);
        return Add(key, value);
    }

    public GgufWriter AddTensor(string name, GgmlType type, long[] dims, byte[] data)
    {
        Tensors.Add(new Tensor(name, type, dims, data));
        return this;
    }

    static void WriteString(BinaryWriter w, string s)
    {
        var bytes = Encoding.UTF8.GetBytes(s);
        w.Write((ulong)bytes.Length);
        w.Write(bytes);
    }

    static GgufValueType ElementType(Array a) => a switch
    {
        string[] => GgufValueType.String,
        int[] => GgufValueType.Int32,
        uint[] => GgufValueType.UInt32,
        float[] => GgufValueType.Float32,
        byte[] => GgufValueType.UInt8,
        long[] => GgufValueType.Int64,
        bool[] => GgufValueType.Bool,
        _ => throw new ArgumentException($"no GGUF element type for {a.GetType()}"),
    };

    static void WriteValue(BinaryWriter w, GgufValueType type, object value)
    {
        switch (value)
        {
            case string s: WriteString(w, s); break;
            case uint u: w.Write(u); break;
            case int i: w.Write(i); break;
            case float f: w.Write(f); break;
            case bool b: w.Write((byte)(b ? 1 : 0)); break;
            case ulong u: w.Write(u); break;
            case long l: w.Write(l); break;
            case double d: w.Write(d); break;
            case byte b: w.Write(b); break;
            case ushort s: w.Write(s); break;
            case Array a:
                var et = ElementType(a);
                w.Write((uint)et);
                w.Write((ulong)a.Length);
                foreach (var e in a)
                    WriteValue(w, et, e!);
                break;
            default: throw new ArgumentException($"cannot write {value.GetType()}");
        }
    }

    public byte[] ToBytes()
    {
        using var stream = new MemoryStream();
        using var w = new BinaryWriter(stream);
        w.Write(Magic);
        w.Write(Version);
        w.Write(TensorCountOverride ?? (ulong)Tensors.Count);
        w.Write(KvCountOverride ?? (ulong)Metadata.Count);
        foreach (var (key, type, value) in Metadata)
        {
            WriteString(w, key);
            w.Write((uint)type);
            WriteValue(w, type, value);
        }
        long offset = 0;
        var offsets = new List<long>();
        foreach (var t in Tensors)
        {
            WriteString(w, t.Name);
            w.Write((uint)t.Dims.Length);
            foreach (long d in t.Dims)
                w.Write((ulong)d);
            w.Write((uint)t.Type);
            w.Write(t.OffsetOverride ?? (ulong)offset);
            offsets.Add(offset);
            offset += (t.Data.Length + Alignment - 1) / Alignment * Alignment;
        }
        w.Flush();
        while (stream.Length % Alignment != 0)
            w.Write((byte)0);
        long dataStart = stream.Length;
        for (int i = 0; i < Tensors.Count; i++)
        {
            stream.Position = dataStart + offsets[i];
            w.Write(Tensors[i].Data);
        }
        w.Flush();
        return stream.ToArray();
    }

    public void Save(string path) => File.WriteAllBytes(path, ToBytes());

    // ---- Llama models ----

    /// <summary>Rows of q or k reordered as llama.cpp's converter does: HF row h*d + j*d/2 + i goes to row h*d + 2i + j.</summary>
    public static float[] Permute(float[] w, int rows, int cols, int headDim)
    {
        var result = new float[w.Length];
        for (int r = 0; r < rows; r++)
        {
            int h = r / headDim, within = r % headDim, half = headDim / 2;
            int j = within / half, i = within % half;
            int to = h * headDim + 2 * i + j;
            Array.Copy(w, (long)r * cols, result, (long)to * cols, cols);
        }
        return result;
    }

    /// <summary>fp32 rows encoded as ggml type <paramref name="type"/>.</summary>
    public static byte[] Encode(GgmlType type, float[] values, int cols)
    {
        int rows = values.Length / cols;
        switch (type)
        {
            case GgmlType.F32:
                return MemoryMarshal.AsBytes(values.AsSpan()).ToArray();
            case GgmlType.F16:
                return MemoryMarshal.AsBytes(values.Select(v => WeightFormat.Fp16.Encode(v)).ToArray().AsSpan()).ToArray();
            case GgmlType.BF16:
                return MemoryMarshal.AsBytes(values.Select(v => WeightFormat.Bf16.Encode(v)).ToArray().AsSpan()).ToArray();
            case GgmlType.Q8_0 or GgmlType.Q4_0 or GgmlType.Q4_K or GgmlType.Q5_K or GgmlType.Q6_K:
            {
                // The engine's quantiser (ggml's, bit for bit) into its planes, then each block in ggml's byte order.
                var q = WeightFormat.All.OfType<BlockQuantFormat>().Single(f => f.GgmlName == type.ToString());
                int blocks = values.Length / q.BlockSize;
                var quants = new byte[q.QuantBytesPerBlock];
                var side = new ushort[q.SideWords];
                var result = new byte[(long)blocks * q.BytesPerBlock];
                for (int b = 0; b < blocks; b++)
                {
                    q.QuantizeBlock(values.AsSpan(b * q.BlockSize, q.BlockSize), quants, side);
                    q.ToGgml(quants, side, result.AsSpan(b * q.BytesPerBlock, q.BytesPerBlock));
                }
                return result;
            }
            default:
                throw new ArgumentException($"cannot encode {type}");
        }
    }

    /// <summary>GPT-2's bytes_to_unicode: printable Latin-1 bytes stand for themselves, the others for 256 + n in order.</summary>
    static readonly char[] ByteToChar = BuildByteToChar();

    static char[] BuildByteToChar()
    {
        var map = new char[256];
        int n = 0;
        for (int b = 0; b < 256; b++)
        {
            bool printable = b is >= '!' and <= '~' or >= 0xA1 and <= 0xAC or >= 0xAE and <= 0xFF;
            map[b] = printable ? (char)b : (char)(256 + n++);
        }
        return map;
    }

    /// <summary>A tokenizer's ranks (token bytes by id) and Llama 3 specials as GGUF tokenizer metadata.</summary>
    public GgufWriter AddTokenizer(IReadOnlyList<byte[]> ranks, int vocabSize)
    {
        var specials = Llama3Vocabulary.DefaultSpecialTokens(ranks.Count);
        var tokens = new string[vocabSize];
        var types = new int[vocabSize];
        for (int i = 0; i < ranks.Count; i++)
        {
            tokens[i] = string.Concat(ranks[i].Select(b => ByteToChar[b]));
            types[i] = 1;
        }
        foreach (var (name, id) in specials)
        {
            tokens[id] = name;
            types[id] = 3;
        }
        Add("tokenizer.ggml.model", "gpt2");
        Add("tokenizer.ggml.pre", "llama-bpe");
        Add("tokenizer.ggml.tokens", tokens);
        Add("tokenizer.ggml.token_type", types);
        Add("tokenizer.ggml.bos_token_id", (uint)specials[Llama3Vocabulary.BeginOfText]);
        Add("tokenizer.ggml.eos_token_id", (uint)specials[Llama3Vocabulary.EndOfText]);
        Add("tokenizer.ggml.eot_token_id", (uint)specials[Llama3Vocabulary.EndOfTurn]);
        Add("tokenizer.chat_template", "{% for message in messages %}{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content'] | trim + '<|eot_id|>' }}{% endfor %}");
        return this;
    }

    /// <summary>
    /// A Llama GGUF of a Hugging Face directory (config.json, model.safetensors, tokenizer.model), as
    /// convert_hf_to_gguf.py writes it: llama.* metadata, GGUF names, q and k permuted, Llama 3.1
    /// scaling as rope_freqs.weight, each matrix in <paramref name="typeOf"/>'s type (norms F32).
    /// </summary>
    public static GgufWriter FromHuggingFace(string dir, Func<string, GgmlType> typeOf)
    {
        var config = LlamaConfig.FromDirectory(dir);
        var w = new GgufWriter();
        w.Add("general.architecture", "llama");
        w.Add("general.name", Path.GetFileName(dir));
        w.Add("llama.block_count", (uint)config.NumHiddenLayers);
        w.Add("llama.context_length", (uint)config.MaxPositionEmbeddings);
        w.Add("llama.embedding_length", (uint)config.HiddenSize);
        w.Add("llama.feed_forward_length", (uint)config.IntermediateSize);
        w.Add("llama.attention.head_count", (uint)config.NumAttentionHeads);
        w.Add("llama.attention.head_count_kv", (uint)config.NumKeyValueHeads);
        w.Add("llama.rope.freq_base", (float)config.RopeTheta);
        w.Add("llama.attention.layer_norm_rms_epsilon", (float)config.RmsNormEps);
        w.Add("llama.rope.dimension_count", (uint)config.HeadDim);
        w.Add("llama.vocab_size", (uint)config.VocabSize);
        using (var ranks = File.OpenRead(Path.Combine(dir, "tokenizer.model")))
        {
            var entries = new StreamReader(ranks).ReadToEnd().Split('\n', StringSplitOptions.RemoveEmptyEntries)
                .Select(line => Convert.FromBase64String(line.Split(' ')[0])).ToList();
            w.AddTokenizer(entries, config.VocabSize);
        }
        if (config.RopeScaling is { } rs)
        {
            // convert_hf_to_gguf.py's LlamaModel: one factor per pair, 1 / ((1 - smooth) / factor + smooth) in between.
            var factors = new float[config.HeadDim / 2];
            double lowWavelen = rs.OriginalMaxPositionEmbeddings / rs.LowFreqFactor, highWavelen = rs.OriginalMaxPositionEmbeddings / rs.HighFreqFactor;
            for (int i = 0; i < factors.Length; i++)
            {
                double freq = 1.0 / Math.Pow(config.RopeTheta, 2.0 * i / config.HeadDim), wavelen = 2 * Math.PI / freq;
                double smooth = (rs.OriginalMaxPositionEmbeddings / wavelen - rs.LowFreqFactor) / (rs.HighFreqFactor - rs.LowFreqFactor);
                factors[i] = (float)(wavelen < highWavelen ? 1 : wavelen > lowWavelen ? rs.Factor : 1 / ((1 - smooth) / rs.Factor + smooth));
            }
            w.AddTensor(GgufLlama.RopeFreqsName, GgmlType.F32, [factors.Length], MemoryMarshal.AsBytes(factors.AsSpan()).ToArray());
        }
        using var source = SafetensorsModel.Open(dir);
        foreach (var (name, shape) in config.ExpectedTensors())
        {
            var t = source.GetTensor(name);
            var values = new float[t.ElementCount];
            DTypeConversion.ToF32(source.GetSpan(t, 0, (int)t.ByteLength), t.DType, values);
            int cols = (int)shape[^1];
            if (name.EndsWith("q_proj.weight"))
                values = Permute(values, (int)shape[0], cols, config.HeadDim);
            else if (name.EndsWith("k_proj.weight"))
                values = Permute(values, (int)shape[0], cols, config.HeadDim);
            var type = shape.Length == 1 ? GgmlType.F32 : typeOf(name);
            w.AddTensor(GgufLlama.GgufName(name), type, shape.Reverse().ToArray(), Encode(type, values, cols));
        }
        return w;
    }
}
