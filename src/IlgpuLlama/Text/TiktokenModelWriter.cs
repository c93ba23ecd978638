using System.Globalization;
using System.Text;

namespace IlgpuLlama.Text;

/// <summary>
/// Writes tiktoken rank files and trains tiny byte-level BPE vocabularies, so that the built-in demo
/// model ships a real tokenizer.model in the same format as Meta's.
/// </summary>
public static class TiktokenModelWriter
{
    /// <summary>
    /// Writes "base64(token bytes) rank" lines, rank = list index. The file is written next to
    /// <paramref name="path"/> and renamed over it, so readers never see a half-written tokenizer.
    /// </summary>
    public static void Write(string path, IReadOnlyList<byte[]> tokensByRank)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        ArgumentNullException.ThrowIfNull(tokensByRank);

        var seen = new HashSet<string>(tokensByRank.Count, StringComparer.Ordinal);
        var entries = new List<(byte[] Bytes, int Rank)>(tokensByRank.Count);
        for (int rank = 0; rank < tokensByRank.Count; rank++)
        {
            byte[] token = tokensByRank[rank] ?? throw new ArgumentException($"Token at rank {rank} is null.", nameof(tokensByRank));
            if (token.Length == 0)
            {
                throw new ArgumentException($"Token at rank {rank} is empty.", nameof(tokensByRank));
            }
            // A rank file maps bytes to ranks, so a duplicate would silently lose one of the ranks.
            if (!seen.Add(Convert.ToBase64String(token)))
            {
                throw new ArgumentException($"Token at rank {rank} duplicates an earlier token.", nameof(tokensByRank));
            }
            entries.Add((token, rank));
        }

        string fullPath = Path.GetFullPath(path);
        string directory = Path.GetDirectoryName(fullPath) ?? ".";
        Directory.CreateDirectory(directory);
        string temp = Path.Combine(directory, $".{Path.GetFileName(fullPath)}.{Guid.NewGuid():N}.tmp");
        try
        {
            File.WriteAllBytes(temp, Serialize(entries));
            File.Move(temp, fullPath, overwrite: true);
        }
        finally
        {
            if (File.Exists(temp)) File.Delete(temp);
        }
    }

    internal static byte[] Serialize(IReadOnlyList<(byte[] Bytes, int Rank)> entries)
    {
        var text = new StringBuilder(entries.Count * 16);
        foreach (var (bytes, rank) in entries)
        {
            text.Append(Convert.ToBase64String(bytes)).Append(' ')
                .Append(rank.ToString(CultureInfo.InvariantCulture)).Append('\n');
        }
        return Encoding.ASCII.GetBytes(text.ToString());
    }

    /// <summary>
    /// Trains a byte-level BPE vocabulary: ranks 0..255 are the single bytes, followed by
    /// <paramref name="mergeCount"/> merged tokens. Each step merges the most frequent adjacent pair
    /// within the Llama 3 pre-tokenizer's pieces; ties go to the pair with the lower left rank, then
    /// the lower right rank, so the result depends only on the corpus.
    /// </summary>
    /// <exception cref="InvalidOperationException">The corpus runs out of pairs before <paramref name="mergeCount"/> merges.</exception>
    public static IReadOnlyList<byte[]> TrainByteLevel(string corpus, int mergeCount)
    {
        ArgumentNullException.ThrowIfNull(corpus);
        ArgumentOutOfRangeException.ThrowIfNegative(mergeCount);

        var tokens = new List<byte[]>(256 + mergeCount);
        var idByBytes = new Dictionary<string, int>(StringComparer.Ordinal);
        for (int b = 0; b < 256; b++)
        {
            tokens.Add([(byte)b]);
            idByBytes.Add(Key([(byte)b]), b);
        }

        // Identical pieces are trained once with a weight; first-seen order keeps iteration stable.
        var words = new List<int[]>();
        var weights = new List<long>();
        var wordIndex = new Dictionary<string, int>(StringComparer.Ordinal);
        foreach (var (offset, length) in Llama3PreTokenizer.Split(corpus))
        {
            string piece = corpus.Substring(offset, length);
            if (wordIndex.TryGetValue(piece, out int existing))
            {
                weights[existing]++;
                continue;
            }
            byte[] bytes = Encoding.UTF8.GetBytes(piece);
            wordIndex.Add(piece, words.Count);
            words.Add(Array.ConvertAll(bytes, b => (int)b));
            weights.Add(1);
        }

        var pairCounts = new Dictionary<(int Left, int Right), long>();
        while (tokens.Count < 256 + mergeCount)
        {
            pairCounts.Clear();
            for (int w = 0; w < words.Count; w++)
            {
                int[] word = words[w];
                for (int i = 0; i + 1 < word.Length; i++)
                {
                    var pair = (word[i], word[i + 1]);
                    pairCounts[pair] = pairCounts.GetValueOrDefault(pair) + weights[w];
                }
            }
            if (pairCounts.Count == 0)
            {
                throw new InvalidOperationException(
                    $"The corpus supports only {tokens.Count - 256} merges, {mergeCount} were requested; use a longer corpus.");
            }

            var best = (Left: -1, Right: -1);
            long bestCount = 0;
            foreach (var (pair, count) in pairCounts)
            {
                if (count > bestCount || (count == bestCount && (pair.Left, pair.Right).CompareTo(best) < 0))
                {
                    best = pair;
                    bestCount = count;
                }
            }

            byte[] merged = [.. tokens[best.Left], .. tokens[best.Right]];
            string key = Key(merged);
            // Different pairs can spell the same bytes (a+bc, ab+c); reuse the token rather than
            // adding a duplicate, which a rank file cannot represent.
            if (!idByBytes.TryGetValue(key, out int mergedId))
            {
                mergedId = tokens.Count;
                tokens.Add(merged);
                idByBytes.Add(key, mergedId);
            }

            for (int w = 0; w < words.Count; w++)
            {
                words[w] = ReplacePair(words[w], best.Left, best.Right, mergedId);
            }
        }
        return tokens;
    }

    private static int[] ReplacePair(int[] word, int left, int right, int merged)
    {
        int found = 0;
        for (int i = 0; i + 1 < word.Length; i++)
        {
            if (word[i] == left && word[i + 1] == right) { found++; i++; }
        }
        if (found == 0) return word;

        var result = new int[word.Length - found];
        int o = 0;
        for (int i = 0; i < word.Length; i++)
        {
            if (i + 1 < word.Length && word[i] == left && word[i + 1] == right)
            {
                result[o++] = merged;
                i++;
            }
            else
            {
                result[o++] = word[i];
            }
        }
        return result;
    }

    private static string Key(byte[] bytes) => Convert.ToBase64String(bytes);
}
