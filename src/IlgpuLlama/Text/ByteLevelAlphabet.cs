namespace IlgpuLlama.Text;

/// <summary>
/// The GPT-2 byte-to-character table used by Hugging Face byte-level BPE vocabularies: printable
/// Latin-1 bytes stand for themselves, the remaining bytes are shifted to U+0100 and up so that every
/// vocabulary entry is a printable JSON string.
/// </summary>
internal static class ByteLevelAlphabet
{
    private static readonly char[] ByteToChar = BuildTable();
    private static readonly Dictionary<char, byte> CharToByte = BuildInverse();

    public static char ToChar(byte b) => ByteToChar[b];

    /// <summary>Converts a vocabulary string back to raw token bytes; false when a character is outside the table.</summary>
    public static bool TryToBytes(string token, out byte[] bytes)
    {
        bytes = new byte[token.Length];
        for (int i = 0; i < token.Length; i++)
        {
            if (!CharToByte.TryGetValue(token[i], out bytes[i]))
            {
                bytes = [];
                return false;
            }
        }
        return true;
    }

    private static char[] BuildTable()
    {
        var table = new char[256];
        var direct = new bool[256];
        for (int b = '!'; b <= '~'; b++) direct[b] = true;
        for (int b = 0xA1; b <= 0xAC; b++) direct[b] = true;
        for (int b = 0xAE; b <= 0xFF; b++) direct[b] = true;
        int shifted = 0;
        for (int b = 0; b < 256; b++)
        {
            table[b] = direct[b] ? (char)b : (char)(256 + shifted++);
        }
        return table;
    }

    private static Dictionary<char, byte> BuildInverse()
    {
        var inverse = new Dictionary<char, byte>(256);
        for (int b = 0; b < 256; b++) inverse.Add(ByteToChar[b], (byte)b);
        return inverse;
    }
}
